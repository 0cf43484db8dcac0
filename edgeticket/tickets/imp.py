"""IMP and A-IMP (paper II-B ②): prune a fraction of what remains, train, repeat until the target sparsity.

A-IMP trains on PGD examples between rounds (the minimax objective of eq. 1); IMP on clean inputs.
`on=downstream` trains on the target task (DS tickets, with a new head), `upstream` on the source task
(US tickets). With `rewind`, surviving weights go back to their pretrained values after every round.
For `channel`, every round is a torch-pruning step, so the channels are physically removed.
"""

from __future__ import annotations

import torch_pruning as tp

from ..config import AttackConfig, TrainConfig
from ..console import progress_bar
from ..masks import apply_masks
from ..models import get_arch, load_weights, replace_submodule
from ..ticket import Ticket
from ..train import fit, replace_head
from .allocate import LatencyBudget, layer_channels, prune_to_budget
from .channel import channel_pruner
from .draw import METHODS, DrawConfig, PruneState, magnitude_step, training_data
from .patterns import PATTERNS


def round_schedule(target: float, rate: float) -> list[float]:
    """Cumulative sparsities 1-(1-rate)^k, capped by (and ending at) the target."""
    schedule, kept = [], 1.0
    while not schedule or schedule[-1] < target:
        kept *= 1 - rate
        schedule.append(min(target, 1 - kept))
    return schedule


def latency_schedule(model, budget: LatencyBudget, rate: float) -> list[float]:
    """Each round's budget in ms: the predicted latency cut by `rate` per round, down to the budget."""
    start = budget.latency.of_layers(layer_channels(model))
    return [start * (1 - cut) for cut in round_schedule(max(0.0, 1 - budget.ms / start), rate)]


def rewound(source: Ticket, current: Ticket, masks: dict) -> Ticket:
    """Surviving weights back to the pretrained values; the (new) head keeps its trained weights."""
    model = source.build_model()
    new_steps = current.pruning_history[len(source.pruning_history):]
    if new_steps:
        graph = tp.DependencyGraph().build_dependency(model, source.example_input())
        graph.load_pruning_history(new_steps)
    classifier = get_arch(source.arch).classifier
    replace_submodule(model, classifier, current.build_model().get_submodule(classifier))
    apply_masks(model, masks)
    return current.with_model(model)


def iterative(ticket: Ticket, config: DrawConfig, adversarial: bool) -> PruneState:
    training = config.training
    splits = training_data(ticket, training)
    attack = AttackConfig.parse(training.attack if adversarial else "none", training.steps)
    recipe = TrainConfig(epochs=training.epochs, lr=training.lr, attack=attack, seed=training.seed)
    source = ticket if splits.class_names == ticket.class_names else replace_head(ticket, splits.class_names,
                                                                                   training.seed)
    current, model, masks = source, source.build_model(), dict(source.masks)
    budgets = latency_schedule(model, config.budget, training.rate) if config.budget else None
    schedule = budgets or round_schedule(config.sparsity, training.rate)
    # one pruner for every round, so each round's target is a fraction of the *original* channels
    pruner = channel_pruner(model, source, config.sparsity, config.scope, schedule=schedule, round_to=config.round_to
                            ) if PATTERNS.get(config.pattern).physical and not budgets else None
    goal = f"to {config.budget.ms:.3g} ms" if budgets else f"to {config.sparsity:.0%}"
    with progress_bar() as bar:  # each round's training bar shows inside this one
        rounds = bar.add_task(f"{config.method} rounds", total=len(schedule), status=goal)
        for index, sparsity in enumerate(schedule):
            if budgets:  # here `sparsity` is the round's budget in ms; --sparsity is a floor for the last round
                last = index == len(schedule) - 1
                history = prune_to_budget(model, current, LatencyBudget(sparsity, config.budget.latency),
                                          config.round_to, config.sparsity if last else 0.0)
            elif pruner:
                model.eval()
                pruner.step()
                history = list(source.pruning_history) + list(pruner.pruning_history())
            else:
                masks = magnitude_step(model, current, config, sparsity, masks).masks
                history = list(source.pruning_history)
            current = current.with_model(model, pruning_history=history, masks=masks)
            if training.rewind:
                current = rewound(source, current, masks)
            step = f"{sparsity:.3g} ms" if budgets else f"{sparsity:.0%}"
            current, _ = fit(current, splits.train, recipe, description=f"{config.method} round to {step}")
            load_weights(model, current.state_dict)
            bar.update(rounds, advance=1)
    return PruneState(model, current.pruning_history, current.masks, current.class_names)


@METHODS.register("imp")
def iterative_magnitude(ticket: Ticket, config: DrawConfig) -> PruneState:
    return iterative(ticket, config, adversarial=False)


@METHODS.register("a-imp")
def adversarial_iterative_magnitude(ticket: Ticket, config: DrawConfig) -> PruneState:
    return iterative(ticket, config, adversarial=True)
