"""`python -m ablate.dashboard --study NAME`: a W&B workspace for a study's variants (wandb-workspaces), or its spec."""

from __future__ import annotations

import json
import sys

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line: read the study, build the workspace, print its spec (--dry-run) or save it and print the URL."""
    p = cli.parser("dashboard", __doc__)
    p.add_argument("--study", required=True, help="the study's name (as in python -m ablate.sweep --study)")
    cli.add_storage_argument(p)
    p.add_argument("--entity", help="W&B entity (default: the study's wandb.entity)")
    p.add_argument("--project", help="W&B project (default: the study's wandb.project)")
    p.add_argument("--name", help="workspace name (default: 'ablate: STUDY')")
    p.add_argument("--dry-run", action="store_true", help="print the workspace spec as JSON; no network, no API key")
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _dashboard(args))


def _dashboard(args) -> int:
    from ablate.errors import ConfigError
    from ablate.results.workspace import build_workspace, save, study_facts, workspace_spec
    from ablate.study.storage import load_study, read_storage, redact, resolve

    url = resolve(args.storage)
    facts = study_facts(load_study(args.study, read_storage(url)))  # an error names the storage
    entity, project = args.entity or facts["entity"], args.project or facts["project"]
    if not entity or not project:
        raise ConfigError(
            f"the W&B {'entity' if not entity else 'project'} is not known: give --entity E "
            f"--project P (the study's config has wandb.entity/project unset; storage {redact(url)})"
        )
    workspace = build_workspace(facts, entity, project, args.name)
    if args.dry_run:
        print(json.dumps(workspace_spec(workspace), indent=1))
        return 0
    return save(workspace)


if __name__ == "__main__":
    sys.exit(main())
