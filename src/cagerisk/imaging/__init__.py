"""Image I/O, geometry checks and (in ``transforms``) the shared MONAI preprocessing."""

from cagerisk.imaging.io import (
    ImageReadError,
    array_to_image,
    image_format,
    image_to_array,
    read_image,
    same_geometry,
    write_image,
)

__all__ = [
    "ImageReadError",
    "array_to_image",
    "image_format",
    "image_to_array",
    "read_image",
    "same_geometry",
    "write_image",
]
