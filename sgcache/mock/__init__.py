"""A mock ShotGrid site: the reference every cached answer is compared with."""
