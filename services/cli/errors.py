"""The one error type commands raise: printed as `medsec: <message>`, never a traceback."""


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
