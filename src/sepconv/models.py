"""Networks as slim's ``nets`` define them, built from sepconv's layers.

* MobileNet v1 (``nets/mobilenet_v1.py``): :func:`mobilenet_v1`,
  :func:`mobilenet_v1_base`, :func:`mobilenet_v1_arg_scope`, the width
  variants ``mobilenet_v1_075/050/025`` and the layer definitions
  :data:`MOBILENETV1_CONV_DEFS`. Variable names equal slim's, so slim's
  checkpoints restore with ``sc.train.Saver().restore(path)``.
"""
from ._src.models.mobilenet_v1 import (MOBILENETV1_CONV_DEFS, Conv, DepthSepConv, mobilenet_v1,
                                       mobilenet_v1_025, mobilenet_v1_050, mobilenet_v1_075,
                                       mobilenet_v1_arg_scope, mobilenet_v1_base)

__all__ = ["Conv", "DepthSepConv", "MOBILENETV1_CONV_DEFS", "mobilenet_v1", "mobilenet_v1_025",
           "mobilenet_v1_050", "mobilenet_v1_075", "mobilenet_v1_arg_scope", "mobilenet_v1_base"]
