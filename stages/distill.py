"""Stage `distill@<variant>`: train the student from cached / fused teacher targets (docs/DESIGN.md §4)."""

import os

import click

from mcad_core.cli import one_line_errors, params_option
from mcad_core.params import load_params
from mcad_core.paths import CACHE, CHECKPOINTS, FUSED, LIVE, PREPARED, STUDENTS, TEACHERS


@click.command()
@click.option("--variant", required=True, help="contrastive | dual_kd | mcad | mcad_dist | mcad_feat")
@params_option
@one_line_errors
def main(variant: str, params_path: str) -> None:
    """Distill one student variant; resumes from its checkpoint when re-run after a kill.

    Under `torchrun --nproc_per_node N stages/distill.py --variant mcad` it trains with DDP.
    """
    from mcad_core.checkpoint import LAST, run_key
    from mcad_core.mcad.distributed import distributed_context, shared_checkpoint_dir
    from mcad_core.mcad.targets import teacher_fingerprints
    from mcad_core.mcad.train import distill_student, load_distill_inputs
    from mcad_core.mcad.variants import VARIANTS
    from mcad_core.student.model import save_student
    from mcad_core.tracking import live_logger

    params = load_params(params_path)
    if variant not in VARIANTS:
        raise click.BadParameter(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    with distributed_context(params.device) as (rank, world, device):
        data, tokenizer = load_distill_inputs(params, variant, PREPARED, TEACHERS, CACHE, FUSED, progress=rank == 0)
        # The rank count is in the key: a checkpoint's LR schedule is sized for its ranks' step count.
        key = run_key(variant, params.seed, params.distill.model_dump(exclude={"variants"}),
                      params.fuse.model_dump(by_alias=True), teacher_fingerprints(TEACHERS), world)
        ckpt = shared_checkpoint_dir(CHECKPOINTS / variant, key, rank, world)
        with live_logger(LIVE / variant, resume=(ckpt / LAST).is_file(), enabled=rank == 0) as log:
            model = distill_student(variant, params.distill.for_variant(variant), data, tokenizer.vocab_size, ckpt, params.distill.seed,
                                    device=device, log=log, rank=rank, world_size=world,
                                    precision=params.precision, progress=rank == 0)
        if rank == 0:
            save_student(model.cpu(), tokenizer, STUDENTS / variant)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
