"""Quantization: pure tensor math (`primitives`, `kmeans1d`), schemes (one file each) and model wiring (`wiring`)."""
