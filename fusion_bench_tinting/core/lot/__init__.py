"""LOT Merging's closed form (Layer-wise Optimal Task vector merging, arXiv 2505.23859): each merged layer's
weights that minimise its feature drift from the experts. Model Tinting starts from it (``init_from=lot``);
the LOT Merging method (``lot_merging``) returns it."""
