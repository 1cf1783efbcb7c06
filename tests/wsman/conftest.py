from tests.wsman.fixtures import wsman_endpoint

__all__ = ["wsman_endpoint"]
