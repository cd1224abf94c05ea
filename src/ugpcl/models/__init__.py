from .unet import SwinConfig, UNetConfig, build_decoder, build_unet  # noqa: F401
