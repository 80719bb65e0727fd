"""`layerprobe inspect`: what a model is, as layerprobe sees it."""

from __future__ import annotations

from rich.table import Table

from layerprobe.cli.common import (
    DeviceOpt,
    DtypeOpt,
    LayersPathOpt,
    ModelOpt,
    NormPathOpt,
    UnembedPathOpt,
    console,
)


def inspect(
    model: ModelOpt,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    layers_path: LayersPathOpt = None,
    norm_path: NormPathOpt = None,
    unembed_path: UnembedPathOpt = None,
) -> None:
    """Show a model's family, layers, hidden size, parameters and reasoning format."""
    from layerprobe.models.loading import load_model
    from layerprobe.scaling.formats import sniff_format

    loaded = load_model(
        model, device=device, dtype=dtype, layers_path=layers_path, norm_path=norm_path, unembed_path=unembed_path
    )
    cfg = loaded.model.config
    n_params = sum(p.numel() for p in loaded.model.parameters())
    table = Table(title=f"layerprobe inspect: {model}", show_header=False)
    rows = [
        ("source", f"{loaded.source} ({loaded.source_kind})"),
        ("family", loaded.family),
        ("architecture", ", ".join(cfg.architectures or [type(loaded.model).__name__])),
        ("decoder layers", f"{loaded.n_layers} (original {loaded.n_layers_original})"),
        ("dropped (original indices)", ", ".join(map(str, loaded.dropped)) or "none"),
        ("compression", _compression(loaded)),
        ("hidden size", str(cfg.hidden_size)),
        (
            "attention heads / kv heads",
            f"{cfg.num_attention_heads} / {getattr(cfg, 'num_key_value_heads', cfg.num_attention_heads)}",
        ),
        ("vocabulary", str(cfg.vocab_size)),
        ("parameters", f"{n_params:,} ({n_params / 1e6:.1f} M)"),
        ("tied embeddings", str(bool(getattr(cfg, "tie_word_embeddings", False)))),
        ("dtype / device", f"{loaded.dtype} / {loaded.device}"),
        ("layers / norm / unembedding", f"{loaded.arch.layers} / {loaded.arch.final_norm} / {loaded.arch.unembed}"),
        ("reasoning format", loaded.reasoning_format or sniff_format(loaded.tokenizer) or "none detected (plain chat)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)


def _compression(loaded: object) -> str:
    """'wanda (unstructured), 83.3 % of the decoder linear weights kept' from layerprobe.json; 'none' otherwise."""
    comp = getattr(loaded, "extra", {}).get("compression")
    if not isinstance(comp, dict):
        return "none"
    size = comp.get("size") or {}
    kept = size.get("kept_fraction")
    tail = f", {100 * kept:.1f} % of the decoder linear weights kept" if isinstance(kept, (int, float)) else ""
    return f"{comp.get('method')} ({comp.get('kind')}){tail}"
