"""The phases of a run, one module each, in the order a run takes them:

1. `first_model`: the default network for a short share, so good predictions exist early;
2. `architecture`: DARTS on a proxy sized to the phase (or a random cell / none, by the search options);
3. `hyperparameters`: BOHB over stacked cells, the DARTS cells in its pool when DARTS learned;
4. `final_fit`: the best choice trained for all the time left.

`common` holds what they share (the data as tensors, training one candidate, the default network).
Each phase module owns its gate and plan, its resume data and its report section; the pipeline
(pipeline.py) only orders them, gives each its time and captures failures. Phase modules import
`common`, never each other.
"""
