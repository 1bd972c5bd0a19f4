"""The demo's figure: learning curves of the variants, and the learned delays."""

from __future__ import annotations

from .train import History

COLOURS = {"learned": "tab:blue", "zero": "tab:orange", "random": "tab:green"}


def plot_results(
    histories: list[History],
    path: str,
    *,
    chance: float,
    max_delay: float,
) -> None:
    """Writes a PNG of three panels: training loss and test accuracy per epoch
    of each variant, and the histogram of the learned delays.

    Args:
        histories: one per variant; the one named ``learned`` gives the
            histogram, and the one named ``random`` the initial delays.
        path: where to write the PNG.
        chance: accuracy of guessing, drawn as a dotted line.
        max_delay: largest delay, in ms: the histogram's range.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "the delayconv demo draws its figure with matplotlib, which is not "
            "installed; pip install matplotlib (or pip install 'delayconv[demo]')"
        ) from error

    # A file is all that is wanted; no display needs to exist.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes, delay_axes) = plt.subplots(
        1, 3, figsize=(15, 4.2), layout="constrained"
    )
    for history in histories:
        epochs = range(1, len(history.loss) + 1)
        colour = COLOURS.get(history.variant)
        label = f"{history.variant} delays"
        loss_axes.plot(epochs, history.loss, marker="o", color=colour, label=label)
        accuracy_axes.plot(
            epochs, history.test_accuracy, marker="o", color=colour, label=label
        )
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    accuracy_axes.axhline(chance, color="grey", linestyle=":", label="chance")
    accuracy_axes.set(
        xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="Test accuracy"
    )
    loss_axes.legend()
    accuracy_axes.legend()

    # The learned delays started from the random variant's, which never moved.
    delays = {h.variant: h.delays for h in histories if h.delays is not None}
    if "learned" in delays:
        delay_axes.hist(
            delays["learned"].flatten().numpy(),
            bins=24,
            range=(0.0, max_delay),
            color=COLOURS["learned"],
            label="learned",
        )
    if "random" in delays:
        delay_axes.hist(
            delays["random"].flatten().numpy(),
            bins=24,
            range=(0.0, max_delay),
            histtype="step",
            color="black",
            label="initial (the fixed random ones)",
        )
    if delays:
        delay_axes.legend()
    delay_axes.set(
        xlabel="delay (ms)", ylabel="weights", title="Delays of the learned variant"
    )

    figure.savefig(path, dpi=110)
    plt.close(figure)
