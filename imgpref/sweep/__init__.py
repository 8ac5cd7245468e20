"""β sweeps of the Diffusion-DPO recipe: a grid of runs sharing data order, draws and the reference's errors."""
