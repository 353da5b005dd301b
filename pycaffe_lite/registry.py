"""Classes by their Caffe type string (Caffe's LayerRegistry and SolverRegistry)."""


class Registry:
    """Filled by the :meth:`register` class decorator, read by :meth:`lookup`.

    ``kind`` ("layer", "solver") names the entries in messages, ``error`` is
    the exception an unknown type raises, and ``load`` (optional) imports the
    modules whose classes register themselves before the first look-up.
    """

    def __init__(self, kind, error, load=None):
        self.kind, self.error, self.load = kind, error, load
        self.classes = {}

    def register(self, type_name, *aliases):
        """Class decorator: the class for ``type_name`` (sets ``cls.type``).

        ``aliases`` are other spellings of the same type (e.g. the V1 enum
        name ``"RELU"``).
        """
        def wrap(cls):
            for name in (type_name,) + aliases:
                if self.classes.setdefault(name, cls) is not cls:
                    raise RuntimeError(f"{self.kind} type {name!r} registered twice")
            cls.type = type_name
            return cls
        return wrap

    def type_list(self):
        """Every registered type string (aliases left out), sorted."""
        if self.load:
            self.load()
        return sorted(name for name, cls in self.classes.items() if cls.type == name)

    def lookup(self, type_name):
        """The class registered for ``type_name``; an unknown one lists the known."""
        if self.load:
            self.load()
        try:
            return self.classes[type_name]
        except KeyError:
            raise self.error(f"unknown {self.kind} type {type_name!r}; known types: "
                             f"{', '.join(self.type_list())}") from None
