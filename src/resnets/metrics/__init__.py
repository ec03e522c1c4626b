"""Image-quality metrics, computed exactly as the papers that report them."""

from .sr import psnr, rgb_to_y, sr_psnr_ssim, ssim

__all__ = ["psnr", "rgb_to_y", "sr_psnr_ssim", "ssim"]
