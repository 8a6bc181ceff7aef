"""A MONAI Label app that serves the bundle: a case's two radiographs in, its CT (and SPIDER's labels) out.

MONAI Label (https://github.com/Project-MONAI/MONAILabel) writes its own folders (``model/``, ``lib/``,
``logs/``, ``bin/``) into the app folder it starts, so the app folder lives outside the bundle: one
command writes it, holding only a ``main.py`` that points back at this bundle, and MONAI Label's own
command serves it::

    python -m custom.monailabel app ~/psct-app          # from the bundle (or repository) root
    monailabel start_server --app ~/psct-app --studies ~/xrays --host 127.0.0.1 --port 8000
    curl -X POST "http://127.0.0.1:8000/infer/psctnet?image=child07_frontal&output=image" -o child07.nii.gz

Studies: each case is two files in the studies folder named by their view, ``<case>_frontal.<ext>``
(or ``_pa``, ``_ap``) and ``<case>_lateral.<ext>`` (or ``_lat``), PNG, TIFF, JPEG, DICOM or NIfTI
(:func:`custom.data.datasets.xray_pair`); asking for either file reconstructs the case. An absolute
path to a folder holding one such pair works too.

Models (``--conf models psctnet,spider``; default: every one whose weights the bundle holds):

- ``psctnet``: the CT, NIfTI in HU on the geometry's grid with its affine (``models/model.pt``);
- ``spider``: SPIDER's CT (``models/spider_model.pt``);
- ``spider_structures``: SPIDER's structure label map (calvarial bones, sutures, fontanelles).

``--conf device cpu`` (or ``cuda:0``) picks the device; the default is the bundle's (CUDA when there).
Each request runs the bundle's own inference pipeline (``configs/inference.json``, with
``spider_inference.json`` for SPIDER) in a temporary folder; nothing is written into the bundle, and
the network is built once and reused. ``custom.monailabel.app`` and ``custom.monailabel.reconstruct``
import MONAI Label; install it as the README says (``[monailabel]`` extra, then MONAI Label itself
without its dependencies, whose numpy < 2 pin is not needed to serve).
"""
