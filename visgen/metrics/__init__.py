"""Evaluation maths: image quality (PSNR, SSIM) and codebook statistics."""
