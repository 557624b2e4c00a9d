"""How far the front can be trusted: repeats with other seeds (confirm), given networks trained as trials (fixed),
the proxy against longer training (fidelity), the ConvNeXt roadmap against its paper (ablation), rank agreement."""
