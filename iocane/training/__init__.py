"""The training area: the epoch loop (``loop``), one epoch's batches (``epoch``), the train state
and its checkpoints, weight selection, validation, the recipes, the hardware, pass counting, and
data-parallel ranks and their launcher."""
