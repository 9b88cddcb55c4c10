"""qa-forge: the library behind the DVC stages (it knows nothing about DVC)."""
