"""Entry points that keep other libraries' training code running on fitkit.

Owns nothing but the package: each submodule is a thin layer that translates another
library's arguments and output onto ``fitkit.Model``, which does the training. Importing
this package imports no framework; ``fitkit.compat.torchkeras`` imports torch.

>>> from fitkit.compat import torchkeras   # was: import torchkeras
"""
