"""Work in progress: replaced by the backbone implementation."""

from ramir.models.base import RestorationModel


class RAMSwinIR(RestorationModel):
    def __init__(self) -> None:
        raise NotImplementedError("RAMSwinIR is being implemented")
