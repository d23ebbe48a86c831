"""One exception type for bad user input: its message is a single sentence naming the problem and the fix."""


class QuantMimicInputError(Exception):
    """Bad input from the user (config, weights, data). ``train_net.py`` prints it as one line and exits 2."""
