"""What the training-speed tools (train_step_speed.py, optimizer_step_speed.py) share: the
fairseq-train flags after ``--``, and the task, model, criterion and training batches built
from them as fairseq-train builds them."""


def fairseq_flags(parser, remainder: list[str]) -> list[str]:
    """The flags after ``--`` (argparse's REMAINDER keeps the ``--``); none is a usage error."""
    flags = remainder[1:] if remainder[:1] == ["--"] else remainder
    if not flags:
        parser.error(
            "give the fairseq-train flags after '--' (data folder, task, arch, ...)"
        )
    return flags


def build_training(flags: list[str], max_tokens: int, num_batches: int):
    """(cfg, task, model, criterion, batches): ``num_batches`` shuffled training batches."""
    from fairseq import options, tasks, utils

    cfg = options.parse_args_and_arch(options.get_training_parser(), input_args=flags)
    utils.import_user_module(cfg)
    task = tasks.setup_task(cfg)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg), task.build_criterion(cfg)
    iterator = task.get_batch_iterator(
        task.dataset("train"),
        max_tokens=max_tokens,
        max_positions=(1024, 1024),
        seed=3,
    ).next_epoch_itr(shuffle=True)
    return cfg, task, model, criterion, [next(iterator) for _ in range(num_batches)]
