"""Evaluation maths: image quality (PSNR, SSIM) and codebook statistics."""

from visgen.metrics.fid import (
    FeatureStats,
    frechet_distance,
    inception_score,
    load_reference_stats,
    save_stats,
    stats_from_features,
)
from visgen.metrics.inception import (
    InceptionFeatures,
    InceptionV3,
    convert_torch_state_dict,
    load_inception,
    load_inception_weights,
    resize_bilinear_tf1,
)

__all__ = [
    "FeatureStats",
    "InceptionFeatures",
    "InceptionV3",
    "convert_torch_state_dict",
    "frechet_distance",
    "inception_score",
    "load_inception",
    "load_inception_weights",
    "load_reference_stats",
    "resize_bilinear_tf1",
    "save_stats",
    "stats_from_features",
]
