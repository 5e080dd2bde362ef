"""The synthetic default world and the real-data loader.

corpus (IU reports) -> sampling (split, oversampling) -> masks (real lung masks) ->
anatomy + findings + devices (density layers) -> render (attenuation, posture, detector)
-> build (`cxrl world build`) ; dataset (Record, load_records, ImageDataset) reads a built
world or a MIMIC-CXR-JPG selection (mimic) ; sheet draws a contact sheet ; posture holds
the psi convention.
"""
