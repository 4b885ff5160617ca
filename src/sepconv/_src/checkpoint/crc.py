"""CRC32C as TF stores it: masked as ``crc32c::Mask`` does."""
import google_crc32c

_MASK_DELTA = 0xA282EAD8


def _mask(crc):
    """TF's ``crc32c::Mask``: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data):
    """TF's ``crc32c::Mask(crc32c::Value(data))``."""
    return _mask(google_crc32c.value(bytes(data)))


def _unmask_crc32c(masked):
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
