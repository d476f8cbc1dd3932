"""LOT Merging (Layer-wise Optimal Task vector merging, arXiv 2505.23859): closed-form merging that
minimises each layer's feature drift from the experts, as a method and as a start for tinting."""
