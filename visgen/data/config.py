"""The typed data settings (`config.data`).

Kept apart from the pipeline so that reading a config file (`visgen.config`,
`configs/*.py`) imports neither grain nor TFDS.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and how to turn it into batches."""

    name: str = "shapes"  # embedded name, any prepared TFDS name, or "folder"
    builder_config: str = ""  # "" = the builder's default (e.g. shapes -> "32")
    data_dir: str = ""  # TFDS data dir; "" = TFDS default (~/tensorflow_datasets)
    manual_dir: str = ""
    folder: str = ""  # image root when name == "folder"
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 32
    num_frames: int = 0  # 0 = images; T > 0 = video clips of T frames
    frame_stride: int = 1
    random_flip: bool = True
    batch_size: int = 32  # global batch size (divided across processes)
    seed: int = 0
    num_workers: int = 0  # grain worker processes; 0 = in-process
    with_captions: bool = False
    # A token cache directory (`visgen.data.token_cache`): train batches are then
    # {"tokens", "label"} read from it instead of images. Generator tasks build it.
    token_cache: str = ""
