"""radfinder: 3D CT vision-language models (RadFinder, fVLM, SCALE-VLP) for training, evaluation and inference."""

__version__ = "0.1.0"
