"""Evaluation over trained workdirs and sample files: gFID, rFID, pFID, class accuracy.

`evals/` holds the command-line tools over these functions and
`visgen.metrics` the maths (Frechet distance in float64, Inception, IS,
PSNR/SSIM). gFID, rFID and pFID share one feature-extraction path
(`features`) under a named feature network.

    features        feature networks by name; batched, masked feature statistics
    samples         sample `.npz` files (images and conditioning labels)
    generation      gFID / IS / class accuracy of samples against a reference
    perturbation    RobusTok token perturbation (pFID)
    reconstruction  rFID / pFID / PSNR / SSIM of a tokenizer or tokenizer workdir
    task_eval       a workdir's own task evaluation (what the loop reports)
"""

from visgen.evaluation.features import (
    CLASSIFIER_FEATURES,
    FEATURE_NAMES,
    FeatureNetwork,
    load_features,
)
from visgen.evaluation.generation import generation_fid
from visgen.evaluation.perturbation import DEFAULT_ALPHAS, nearest_codes, perturb_tokens
from visgen.evaluation.reconstruction import has_codebook, reconstruction_fid, workdir_fid
from visgen.evaluation.samples import SAMPLE_KEYS, load_labels, load_samples
from visgen.evaluation.task_eval import evaluate_workdir
from visgen.metrics.classifier import WEIGHTS_DIR

__all__ = [
    "CLASSIFIER_FEATURES",
    "DEFAULT_ALPHAS",
    "FEATURE_NAMES",
    "SAMPLE_KEYS",
    "WEIGHTS_DIR",
    "FeatureNetwork",
    "evaluate_workdir",
    "generation_fid",
    "has_codebook",
    "load_features",
    "load_labels",
    "load_samples",
    "nearest_codes",
    "perturb_tokens",
    "reconstruction_fid",
    "workdir_fid",
]
