"""How a network is trained: datasets, the short proxy training of one trial, the full recipe."""
