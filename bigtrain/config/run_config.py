"""RUN_DIR/config.yaml: the resolved config rank zero recorded, which every other rank trains from."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from bigtrain.config.schema import BigtrainConfig

CONFIG_FILE = "config.yaml"


def save_run_config(cfg, run_dir: Path) -> Path:
    """Write the resolved config (secrets redacted). A different config already there (a resumed run with changed
    overrides) is kept as config.N.yaml: nothing written earlier is lost."""
    from bigtrain.config.secrets import redact

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    text = OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True))))
    if path.is_file() and path.read_text() != text:
        n = 1
        while (run_dir / f"config.{n}.yaml").exists():
            n += 1
        path.rename(run_dir / f"config.{n}.yaml")
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def load_run_config(run_dir: Path):
    """The recorded config, typed by the schema again."""
    return OmegaConf.merge(OmegaConf.structured(BigtrainConfig), OmegaConf.load(run_dir / CONFIG_FILE))
