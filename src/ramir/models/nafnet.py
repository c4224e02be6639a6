"""Work in progress: replaced by the backbone implementation."""

from ramir.models.base import RestorationModel


class NAFNet(RestorationModel):
    def __init__(self) -> None:
        raise NotImplementedError("NAFNet is being implemented")
