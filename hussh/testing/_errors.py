"""The one exception of hussh.testing."""


class FleetError(RuntimeError):
    """A fleet could not be brought up, reached, changed or torn down."""
