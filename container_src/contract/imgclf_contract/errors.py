"""What the image refuses: an input that breaks its contract, with a message that says what to change."""


class ContractError(ValueError):
    """The job's input or configuration breaks the image's contract; the message names the fix."""


class HyperparameterError(ContractError):
    """A hyperparameter has a value the built-in trainer cannot use."""


class LayoutError(ContractError):
    """The data's channels or folders are not laid out as the built-in trainer reads them."""
