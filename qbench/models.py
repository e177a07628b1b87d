"""Load a model and its tokenizer from a local folder, an installed package (pkg://), the hub, or a config; build
a model yaml's full-size shape (`arch:`) with random weights, offline."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from qbench.config import ModelSchema
from qbench.errors import QbenchError

log = logging.getLogger(__name__)
FAMILIES = {  # model.family -> the transformers auto class of its full model
    "encoder": "AutoModelForSequenceClassification",
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}


def resolve(path: str) -> str:
    """'pkg://package/sub/dir' -> that folder inside the installed package; anything else unchanged."""
    if not path.startswith("pkg://"):
        return path
    pkg, _, sub = path[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise QbenchError(f"{path}: the Python package {pkg!r} is not installed (pip install {pkg.replace('_', '-')})")
    return str(Path(list(spec.submodule_search_locations)[0]) / sub)


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host does not answer within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cache_root(cache_dir: str | None = None) -> Path:
    """Where qbench keeps models it derives (fine-tuned FP models, converted GGUF files): `cache_dir` (the config's
    key), else $QBENCH_CACHE, else ~/.cache/qbench."""
    return Path(cache_dir or os.environ.get("QBENCH_CACHE") or Path.home() / ".cache" / "qbench").expanduser()


def gguf_cache_dir() -> Path:
    """Where converted GGUF checkpoints live: <cache root>/gguf."""
    return cache_root() / "gguf"


def materialize_gguf(gguf: Path) -> Path:
    """Convert a GGUF checkpoint once into a cached HF folder (de-quantized to float32 weights + tokenizer) and
    return that folder. The model's 'full precision' is then the de-quantized GGUF file (e.g. 4-bit Q4_1)."""
    import shutil
    import tempfile

    st = gguf.stat()
    out = gguf_cache_dir() / f"{gguf.stem}-{st.st_size}"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder in %s (once)", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None  # weights are plain float32 tensors now; keep no GGUF loading config
        model.config.quantization_config = None
        del model.config.quantization_config
        model.config.qbench_source = f"de-quantized from {gguf.name} ({st.st_size} bytes)"
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():  # a concurrent conversion finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def from_pretrained(loader, name: str, what: str, **kwargs):
    """loader.from_pretrained(name) that fails in one line, without hub retries, when the hub cannot be reached.
    A `.gguf` file is converted once to a cached HF folder (see materialize_gguf) and loaded from there."""
    path = resolve(name)
    if path.endswith(".gguf") and Path(path).is_file():
        path = str(materialize_gguf(Path(path)))
    local = Path(path).exists()
    offline = not local and not hub_reachable()
    try:
        return loader.from_pretrained(path, local_files_only=local or offline, **kwargs)
    except (OSError, ValueError) as e:
        if local:
            raise QbenchError(f"cannot load {what} from {path}: {str(e).splitlines()[0]}") from None
        why = "the hub is unreachable and it is not in the local HF cache" if offline else str(e).splitlines()[0]
        raise QbenchError(
            f"cannot load {what} {name!r}: {why}; download it where there is network "
            f"(hf download {name}) or point at local weights with model.name_or_path=/path/to/{name.split('/')[-1]}"
        ) from None


def check_available(model_cfg: ModelSchema) -> None:
    """Fail fast (before heavy imports) when weights are neither local, cached, nor reachable on the hub."""
    from huggingface_hub import try_to_load_from_cache

    for key in ("name_or_path", "tokenizer"):
        name = getattr(model_cfg, key)
        if not name or Path(resolve(name)).exists() or (key == "name_or_path" and model_cfg.config):
            continue
        if Path(name).is_absolute() or name.startswith("."):
            raise QbenchError(f"model.{key}={name}: no such folder")
        if isinstance(try_to_load_from_cache(name, "config.json"), str) or hub_reachable():
            continue
        raise QbenchError(
            f"model={model_cfg.name}: {name!r} is not in the local HF cache and the hub is unreachable; "
            f"download it where there is network (hf download {name}) or point at local weights with "
            f"model.{key}=/path/to/{name.split('/')[-1]}"
        )


def load_tokenizer(model_cfg: ModelSchema):
    """The model's tokenizer (model.tokenizer, else model.name_or_path), with a pad token."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    name = model_cfg.tokenizer or model_cfg.name_or_path
    if not name:
        raise QbenchError(f"model={model_cfg.name}: set model.tokenizer or model.name_or_path")
    folder = Path(resolve(name))
    bare_bpe = (folder / "merges.txt").is_file() and not any(
        (folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    # a folder of only GPT-2's vocab.json + merges.txt (<shared>/models/gpt2-tokenizer): AutoTokenizer can't tell
    tok = from_pretrained(GPT2TokenizerFast if bare_bpe else AutoTokenizer, name, "tokenizer")
    if tok.pad_token is None and tok.eos_token is not None:  # GPT-2 style tokenizers have no pad token
        tok.pad_token = tok.eos_token
    return tok


def from_shape(shape: Mapping, auto_cls, seed: int, **kwargs):
    """`auto_cls` randomly initialised (seeded) from a shape dict {model_type, sizes...}; kwargs go to the config."""
    import torch
    from transformers import AutoConfig

    torch.manual_seed(seed)
    shape = dict(shape)
    return auto_cls.from_config(AutoConfig.for_model(shape.pop("model_type"), **shape, **kwargs))


def load_model(model_cfg: ModelSchema, auto_cls, seed: int, **kwargs):
    """`auto_cls` (e.g. AutoModelForSequenceClassification) from pretrained weights, or randomly initialised
    from model.config when that is given; kwargs go to the config (num_labels, ...)."""
    import torch

    if model_cfg.config:  # random init of tiny models
        return from_shape(model_cfg.config, auto_cls, seed, **kwargs)
    torch.manual_seed(seed)  # random init of new heads
    # float32 master weights whatever the checkpoint stores: transformers 5 loads a bf16/fp16 file in its own
    # dtype, and Trainer would then train (and quantize) in half precision, which diverges
    return from_pretrained(auto_cls, model_cfg.name_or_path, "model", dtype=torch.float32, **kwargs)


def arch_model(model_cfg: ModelSchema, seed: int = 0):
    """The full-size model of a model yaml's `arch:` dict (else its `config:`, for tiny test models), randomly
    initialised, offline (no weights needed): family encoder -> AutoModelForSequenceClassification (2 labels),
    causal_lm -> AutoModelForCausalLM, seq2seq -> AutoModelForSeq2SeqLM."""
    import transformers

    shape, family = model_cfg.arch or model_cfg.config, model_cfg.family
    if not shape:
        raise QbenchError(f"model={model_cfg.name}: no `arch:` dict in its yaml; add the architecture's "
                          "shape fields (model_type, sizes) to size it offline")  # fmt: skip
    if family not in FAMILIES:
        raise QbenchError(f"model.family={family!r}; valid: {', '.join(FAMILIES)}")
    kwargs = {"num_labels": 2} if family == "encoder" else {}
    return from_shape(shape, getattr(transformers, FAMILIES[family]), seed, **kwargs)


def weight_sharing(model) -> dict | None:
    """ALBERT-style cross-layer sharing: how many layers reuse each shared layer group (None if no sharing)."""
    c = model.config
    groups = getattr(c, "num_hidden_groups", None)
    if groups is None or c.num_hidden_layers == groups:
        return None
    return {
        "shared_layer_groups": groups,
        "layers": c.num_hidden_layers,
        "uses_per_group": c.num_hidden_layers // groups,
        "note": "each shared tensor has one quantizer (one codebook/scale set), reused by every layer that shares it",
    }
