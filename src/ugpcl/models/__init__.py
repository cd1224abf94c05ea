from .unet import build_decoder, build_unet  # noqa: F401
