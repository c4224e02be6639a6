"""Work in progress: replaced by the backbone implementation."""

from ramir.models.base import RestorationModel


class RAMPromptIR(RestorationModel):
    def __init__(self) -> None:
        raise NotImplementedError("RAMPromptIR is being implemented")
