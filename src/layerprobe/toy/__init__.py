"""The embedded toy reasoning model: its task family, tokenizer, training and evaluation. Its trained
weights ship inside the package (`toy/weights/`) and are found through the alias table
(layerprobe.models.aliases), not through this package."""
