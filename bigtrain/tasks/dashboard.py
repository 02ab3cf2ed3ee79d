"""`task=dashboard logger.project=P [logger.entity=E] [sweep_dir=DIR]`: bigtrain's standard wandb workspace, as code.

DIR is a sweep directory (its points' logged metrics and swept overrides: a comparison section, the runset filtered
to the sweep's wandb group) or one run directory (its logged metrics); without it, every standard panel. With
logger.mode=online and a wandb key, the workspace is saved and its URL printed. Otherwise (offline, no key, or no
network) its spec goes to DIR/wandb_workspace.json (or this task's run directory) with the command that pushes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bigtrain.config.validate import wandb_problems
from bigtrain.errors import ConfigError
from bigtrain.sweep.points import is_point_dir, read_points, varying_overrides
from bigtrain.training.dashboard import SPEC_FILE, build_workspace, logged_keys, swept_keys


def _source(cfg) -> tuple[Path | None, list[Path], list[list[str]]]:
    """(directory the spec goes to, run directories whose keys count, each point's varied overrides)."""
    if not cfg.sweep_dir:
        return None, [], []
    folder = Path(cfg.sweep_dir).expanduser()
    if (folder / "metrics.csv").is_file():  # one run
        return folder, [folder], []
    if not folder.is_dir() or not any(is_point_dir(p) for p in folder.iterdir()):
        raise ConfigError(
            f"sweep_dir={cfg.sweep_dir} is neither a sweep directory (folders with status.json, config.yaml or "
            "summary.json) nor a run directory (metrics.csv); give a directory a run or a `-m` sweep wrote"
        )
    points = read_points(folder)
    return folder, [p.run_dir for p in points], [v for v in varying_overrides(points) if v]


def _wandb_group(point_dir: Path) -> str | None:
    """The wandb group the sweep's runs logged under: their logger.group, else the sweep's DATE/TIME."""
    from omegaconf import OmegaConf

    from bigtrain.training.loggers import sweep_name

    config = point_dir / "config.yaml"
    group = OmegaConf.load(config).logger.get("group") if config.is_file() else None
    return group or sweep_name(point_dir)


def _online(cfg) -> bool:
    online = cfg.logger.mode == "online" and os.environ.get("WANDB_MODE") != "offline"
    return online and not wandb_problems(_as_wandb(cfg))


def _as_wandb(cfg):
    """The key check of logger=wandb applies to the dashboard whatever logger the composed config names."""
    from omegaconf import OmegaConf

    copy = OmegaConf.create(OmegaConf.to_container(cfg.logger))
    copy.name = "wandb"
    return OmegaConf.create({"logger": copy})


def run(cfg, run_dir: Path) -> dict:
    folder, run_dirs, varying = _source(cfg)
    keys = logged_keys(run_dirs) if run_dirs else None
    swept = swept_keys(varying) if len(varying) > 1 else None
    group = _wandb_group(run_dirs[0]) if swept else None
    name = f"bigtrain sweep {group}" if group else "bigtrain"
    entity = cfg.logger.entity or os.environ.get("WANDB_ENTITY") or ""
    out_dir = folder or run_dir
    result = {"project": cfg.logger.project, "sections": None, "url": None, "spec": None}
    if _online(cfg):
        import wandb

        entity = entity or wandb.Api().default_entity
        workspace = build_workspace(entity, cfg.logger.project, keys, swept, group, name)
        try:
            workspace.save()
            result["url"] = workspace.url
            print(f"dashboard: saved {workspace.url}")
        except Exception as e:  # network or permission: keep the spec, say how to push it
            print(f"dashboard: could not save to wandb ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    else:
        workspace = build_workspace(entity, cfg.logger.project, keys, swept, group, name)
    result["sections"] = [s.name for s in workspace.sections]
    if result["url"] is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        spec_path = out_dir / SPEC_FILE
        spec_path.write_text(json.dumps(workspace._spec, indent=2))
        result["spec"] = str(spec_path)
        push = ["python -m bigtrain task=dashboard", f"logger.project={cfg.logger.project}", "logger.mode=online"]
        push += [f"logger.entity={entity}"] if entity else []
        push += [f"sweep_dir={folder}"] if folder else []
        print(f"dashboard: workspace spec ({len(result['sections'])} sections) written to {spec_path}")
        print(f"dashboard: push it later with WANDB_API_KEY set (or after `wandb login`): {' '.join(push)}")
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # Hydra made a run directory that nothing was written to
    return result
