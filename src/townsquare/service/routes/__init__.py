"""The API's routes, one module per group (see :mod:`townsquare.service.app`)."""
