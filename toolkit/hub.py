"""Publishing: a model card with YAML metadata, a staged upload folder (the dry run), and the Hub upload.

Tokens come only from huggingface_hub's own lookup (HF_TOKEN or `hf auth login`); they are never printed, logged,
written into configs or passed on the command line.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from diffusers.utils.hub_utils import populate_model_card
from huggingface_hub import ModelCard, ModelCardData

from toolkit import __version__
from toolkit.errors import UserError

TOOLKIT = f"anatomy-toolkit {__version__}"  # named in model cards (the project has no public URL to link yet)

UPLOAD_DIR = "hub_upload"
# What every run folder publishes besides its model: the card, the resolved config, the summary and the plots.
RUN_FILES = ["README.md", "config.yaml", "summary.json", "samples/final.png", "loss.png"]


@dataclass
class CardInfo:
    """What the model card says about a run."""

    repo_id: str
    pipeline_tag: str
    license: str
    description: str
    tags: list[str] = field(default_factory=list)
    datasets: list[str] | None = None
    grid: str | None = None  # path of the sample grid inside the repo
    loss_plot: str | None = None  # path of the loss curve inside the repo
    config: dict | None = None
    figures: dict | None = None
    usage: list[str] | None = None  # Python lines for the Usage section; default: a DDPMPipeline
    base_model: str | None = None  # what a fine-tune (a LoRA) was trained on


DDPM_USAGE = ["from diffusers import DDIMScheduler, DDPMPipeline", "",
              'pipe = DDPMPipeline.from_pretrained("{repo_id}")  # stock diffusers: no custom code',
              "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the toolkit's default sampler",
              "images = pipe(batch_size=4, num_inference_steps=25).images"]


def build_model_card(info: CardInfo) -> ModelCard:
    """A model card: YAML metadata (library, pipeline tag, license, tags, datasets) and a readable body."""
    data = ModelCardData(license=info.license, library_name="diffusers", pipeline_tag=info.pipeline_tag,
                         datasets=info.datasets, base_model=info.base_model)
    body = [f"# {info.repo_id}", "", info.description, ""]
    if info.grid:
        body += ["## Samples", "", f"![samples]({info.grid})", ""]
    usage = [line.format(repo_id=info.repo_id) for line in (info.usage or DDPM_USAGE)]
    body += ["## Usage", "", "```python", *usage, "```", ""]
    if info.figures:
        body += ["## Training results", "", "| measure | value |", "|---|---|"]
        body += [f"| {k} | {v} |" for k, v in info.figures.items()] + [""]
    if info.loss_plot:
        body += [f"![training loss]({info.loss_plot})", ""]
    if info.config:
        body += ["## Training configuration", "", "```yaml", yaml.safe_dump(info.config, sort_keys=False).strip(),
                 "```", ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    return populate_model_card(card, tags=["diffusers", "anatomy-toolkit", *info.tags])


def stage_upload(output_dir: str | Path, card: ModelCard, files: list[str]) -> Path:
    """Write `output_dir/hub_upload`: exactly the files that would be pushed (`files` and RUN_FILES, where they
    exist; checkpoints and logs are never among them)."""
    output_dir = Path(output_dir)
    card.save(output_dir / "README.md")
    stage = output_dir / UPLOAD_DIR
    shutil.rmtree(stage, ignore_errors=True)
    for name in dict.fromkeys([*files, *RUN_FILES]):
        src = output_dir / name
        if not src.exists():
            continue
        dst = stage / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    return stage


def publish(card: ModelCard, output_dir: str | Path, files: list[str], *, repo_id: str, private: bool,
            dry_run: bool) -> str:
    """Write the card and the upload folder; push it unless this is a dry run. Returns a status line."""
    stage = stage_upload(output_dir, card, files)
    if dry_run:
        return f"hub dry run: {stage} holds exactly what would be uploaded to {repo_id}"
    return f"pushed to {push_folder(stage, repo_id, private)}"


def push_folder(folder: str | Path, repo_id: str, private: bool) -> str:
    """Create the repository if needed and upload `folder`; returns the repository URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if get_token() is None:
        raise UserError("no Hugging Face token found: set HF_TOKEN or run `hf auth login`, "
                        "or use --hub_dry_run to only write the upload folder")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload from anatomy-toolkit")
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"upload to {repo_id} failed: {e}") from None
    return str(url)
