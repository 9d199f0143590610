"""RT-DETRv2 model: backbone, hybrid encoder, decoder, post-processor and their builders.

Import the submodules directly (``rtdetr_tao.model.build``, ``rtdetr_tao.model.rtdetr``, ...); this package
imports nothing itself.
"""
