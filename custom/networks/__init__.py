"""Networks: the PSCT-Net generator and its parts, the discriminator, and (later) SPIDER.

``psctnet.py`` only composes; every module of PSCT-Net (arXiv 2606.19867) lives in its own file:
``encoder.py`` (2D view encoders and 3D encoder stages), ``backprojection.py`` (BP-I prior and BP-C
conditioning), ``agp.py`` (AGP-3D attention-guided 2D->3D projection), ``fully_connected.py`` (the
X2CT-GAN fully connected 2D->3D link it replaces), ``bimamba.py`` with ``mamba.py`` and
``selective_scan.py`` (BiM-3D), ``multiview.py`` (MV3D-C decoder fusion), ``decoder.py`` and
``discriminator.py``.
"""
