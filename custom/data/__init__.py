"""Reading, canonicalising and simulating data: CT volumes in, biplanar X-rays out, and real X-rays in.

One concept per module: ``ct`` (CT files -> canonical HU volume on the geometry's grid), ``xray``
(real radiograph files -> normalised views), ``simulate`` (canonical CT -> biplanar X-rays through the
projector and detector physics) and ``datasets`` (phantom, CT-folder and datalist datasets, splits).
"""
