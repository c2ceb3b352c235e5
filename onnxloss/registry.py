"""Plugin discovery and the registry of loss and regularizer names.

Plugins come from two places, loaded through one path: the built-in modules listed in
:data:`BUILTIN_PLUGINS`, then the entry points of group ``onnxloss`` sorted by distribution
and name. Each plugin is imported, registered with pluggy and asked for its terms on its
own, so one that fails to import, whose hook raises, or that claims a taken name is
reported (by plugin and distribution) without stopping the others.

Loading happens once per registry, under a lock: the first thread to need the registry
loads it while the others wait, so concurrent first calls all see every plugin. Plugin
code cannot end or corrupt the process from here: ``SystemExit`` and any other
``BaseException`` but ``KeyboardInterrupt`` raised while a plugin is imported or while its
hooks run is a recorded plugin failure, and whatever a plugin prints on ``sys.stdout``
while it loads goes to ``sys.stderr`` instead (``onnxloss plugins --json`` stays valid).

Environment switches, read when the default registry is created:

``ONNXLOSS_DISABLE_PLUGIN_AUTOLOAD=1``
    load only the built-ins, no entry points.
``ONNXLOSS_PLUGINS=a,b``
    load only these entry points (by entry-point name); built-ins always load.
``ONNXLOSS_BLOCK_PLUGINS=a,b``
    never load these entry points.
``ONNXLOSS_TRACE_HOOKS=1``
    print every hook call and its result to stderr, then the names each plugin
    registered, and each problem as it happens.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .errors import PluginError, PluginWarning, UnknownTermError
from .terms import Loss, Regularizer, Term

ENTRY_POINT_GROUP = hookspecs.PROJECT
BUILTIN_PLUGINS: tuple[str, ...] = (
    "onnxloss.losses.regression",
    "onnxloss.losses.classification",
    "onnxloss.losses.margin",
    "onnxloss.losses.ranking",
    "onnxloss.losses.penalties",
    # gradient rules of onnxloss.autodiff, one plugin per operator family
    "onnxloss.autodiff.rules.elementwise",
    "onnxloss.autodiff.rules.reductions",
    "onnxloss.autodiff.rules.shapes",
    "onnxloss.autodiff.rules.nn",
    "onnxloss.autodiff.rules.recurrent",
    "onnxloss.autodiff.rules.control_flow",
)
ENV_DISABLE_AUTOLOAD = "ONNXLOSS_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "ONNXLOSS_PLUGINS"
ENV_BLOCK = "ONNXLOSS_BLOCK_PLUGINS"
ENV_TRACE = "ONNXLOSS_TRACE_HOOKS"

KINDS: dict[str, tuple[str, type[Term]]] = {
    "loss": ("onnxloss_register_losses", Loss),
    "regularizer": ("onnxloss_register_regularizers", Regularizer),
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
GRADIENT_HOOK = "onnxloss_register_gradients"
_OP_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False

    def describe(self) -> str:
        """``plugin 'focal' (onnxloss-focal 1.0)``: the form error messages use."""
        if self.builtin:
            origin = "built-in"
        elif self.distribution:
            origin = f"{self.distribution} {self.version or ''}".strip()
        else:
            origin = "not from an installed distribution"
        return f"plugin '{self.name}' ({origin})"


@dataclass(frozen=True)
class Registration:
    """A registered term: its names, class and the plugin that registered it."""

    name: str
    kind: str
    cls: type[Term]
    plugin: PluginInfo
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """First line of the class docstring."""
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class GradientRegistration:
    """A registered gradient rule: the operator, the rule and the plugin that registered it.

    ``domain`` is ``""`` for ai.onnx; ``non_differentiable`` holds the positions of inputs
    the rule treats as constants; ``check(node)`` (or None) says why a node's form is not
    handled ("" when it is).
    """

    op_type: str
    domain: str
    rule: Callable
    plugin: PluginInfo
    non_differentiable: frozenset[int] = frozenset()
    check: Callable | None = None

    @property
    def operator(self) -> str:
        """``Relu``, or ``my.domain.Op`` outside ai.onnx: the form messages use."""
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or a registration of it that was refused."""

    plugin: PluginInfo
    stage: str
    message: str

    def describe(self) -> str:
        return f"{self.plugin.describe()} failed at {self.stage}: {self.message}"

    def as_error(self) -> PluginError:
        return PluginError(self.describe())


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class _Pending:
    """Registrations made by one plugin's hook call, committed only if the hook returns."""

    kind: str
    items: list[type[Term]] = field(default_factory=list)


class PluginRegistry:
    """The plugin manager and the name → term tables built from it.

    Args:
        builtins: module paths of the built-in plugins.
        entry_points: load plugins from the ``onnxloss`` entry-point group.
        allow: if given, only these entry-point names are loaded.
        block: entry-point names never loaded.
        trace: write every hook call, each plugin's registrations and each problem to stderr.
    """

    def __init__(
        self,
        *,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        entry_points: bool = True,
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        trace: bool = False,
    ):
        self._builtins = tuple(builtins)
        self._entry_points = entry_points
        self._allow = None if allow is None else frozenset(allow)
        self._block = frozenset(block)
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._trace = trace
        if trace:
            self._pm.trace.root.setwriter(sys.stderr.write)
            self._pm.enable_tracing()
        self._loaded = False
        self._loading = False
        # Re-entrant: a plugin may look terms up while it loads (it then sees the partial
        # tables); add_plugin loads first, under the same lock.
        self._lock = threading.RLock()
        self._plugins: list[PluginInfo] = []
        self._failures: list[PluginFailure] = []
        self._tables: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self._lookup: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self._gradients: dict[tuple[str, str], GradientRegistration] = {}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> PluginRegistry:
        allow = _split(environ.get(ENV_ALLOW))
        return cls(
            entry_points=not _truthy(environ.get(ENV_DISABLE_AUTOLOAD)),
            allow=allow or None,
            block=_split(environ.get(ENV_BLOCK)),
            trace=_truthy(environ.get(ENV_TRACE)),
        )

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> PluginRegistry:
        """Import and register every plugin once; later calls do nothing.

        Thread-safe: concurrent first calls wait for the one that loads.
        """
        if self._loaded:  # the fast path, once loading has finished
            return self
        with self._lock:
            if self._loaded or self._loading:  # done meanwhile, or re-entered by a plugin
                return self
            self._loading = True
            try:
                with _plugin_output_to_stderr():
                    self._load_all()
            finally:
                self._loading = False
                self._loaded = True  # even after a KeyboardInterrupt: never load twice
        return self

    def _load_all(self) -> None:
        for module in self._builtins:
            info = PluginInfo(module.rsplit(".", 1)[-1], module, builtin=True)
            self._load_one(info, lambda module=module: importlib.import_module(module))
        if self._entry_points:
            for ep in self._discover():
                dist = getattr(ep, "dist", None)
                info = PluginInfo(
                    ep.name,
                    ep.value,
                    distribution=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None,
                )
                self._load_one(info, ep.load)

    def _discover(self) -> list[importlib.metadata.EntryPoint]:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        chosen = []
        for ep in eps:
            if ep.name in self._block:
                continue
            if self._allow is not None and ep.name not in self._allow:
                continue
            chosen.append(ep)
        dist_name = lambda ep: ep.dist.metadata["Name"] if getattr(ep, "dist", None) else ""  # noqa: E731
        return sorted(chosen, key=lambda ep: (dist_name(ep).lower(), ep.name))

    def add_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Register a plugin object or module directly (tests, notebooks, frameworks).

        Goes through the same checks as an entry point; failures are reported the same way.
        """
        self.load()
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name or module, module, distribution, version)
        with self._lock, _plugin_output_to_stderr():
            self._load_one(info, lambda: plugin)
        return info

    def _load_one(self, info: PluginInfo, loader: Callable[[], object]) -> None:
        if any(p.name == info.name for p in self._plugins):
            self._fail(info, "register", "a plugin with this name is already loaded")
            return
        try:
            plugin = loader()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin never ends the process
            self._fail(info, "import", _describe_exception(exc))
            return
        try:
            self._pm.register(plugin, name=info.name)
            self._pm.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy.PluginValidationError, a raising __getattr__
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            self._fail(info, "register", _describe_exception(exc))
            return
        self._plugins.append(info)
        others = [p for p in self._pm.get_plugins() if p is not plugin]
        for kind, (hook_name, _) in KINDS.items():
            self._call_hook(info, kind, self._pm.subset_hook_caller(hook_name, others))
        self._call_gradient_hook(info, self._pm.subset_hook_caller(GRADIENT_HOOK, others))
        if self._trace:
            # pluggy's trace shows the hook calls, not whose they are nor what they added.
            added = [
                f"{kind} '{name}'"
                for kind, table in self._tables.items()
                for name, reg in table.items()
                if reg.plugin == info
            ]
            rules = [r.operator for r in self._gradients.values() if r.plugin == info]
            if rules:
                added.append(f"{len(rules)} gradient rule(s) ({', '.join(rules)})")
            sys.stderr.write(
                f"onnxloss: {info.describe()} from {info.module} registered "
                f"{', '.join(added) or 'nothing'}\n"
            )

    def _call_hook(self, info: PluginInfo, kind: str, caller: Callable[..., object]) -> None:
        hook_name, base = KINDS[kind]
        pending = _Pending(kind)

        def register(cls: type[Term]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(
                    f"{hook_name} registered {cls!r}, which is not a subclass of "
                    f"onnxloss.{base.__name__}"
                )
            names = (cls.name, *cls.aliases)
            bad = [n for n in names if not (isinstance(n, str) and _NAME.match(n))]
            if bad:
                raise PluginError(
                    f"{cls.__name__} has invalid name(s) {bad}: names start with a letter "
                    "and hold letters, digits, '_', '.' or '-'"
                )
            pending.items.append(cls)

        try:
            caller(register=register)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a raising (or exiting) hook loses its registrations
            self._fail(info, f"hook {hook_name}", _describe_exception(exc))
            return
        for cls in pending.items:
            self._commit(info, kind, cls)

    def _commit(self, info: PluginInfo, kind: str, cls: type[Term]) -> None:
        lookup = self._lookup[kind]
        taken = [n for n in (cls.name, *cls.aliases) if n in lookup]
        if cls.name in lookup:
            owner = lookup[cls.name].plugin
            self._fail(
                info,
                f"registering {kind} '{cls.name}'",
                f"the name is already registered by {owner.describe()}; "
                f"keeping {owner.name}'s, refusing this one",
            )
            return
        aliases = tuple(a for a in cls.aliases if a not in lookup)
        for alias in taken:
            owner = lookup[alias].plugin
            self._fail(
                info,
                f"registering {kind} alias '{alias}'",
                f"the name is already registered by {owner.describe()}; alias dropped",
            )
        reg = Registration(cls.name, kind, cls, info, aliases)
        self._tables[kind][cls.name] = reg
        for n in (cls.name, *aliases):
            lookup[n] = reg

    def _call_gradient_hook(self, info: PluginInfo, caller: Callable[..., object]) -> None:
        pending: list[GradientRegistration] = []

        def register(
            op_type: str,
            rule: Callable,
            domain: str = "",
            non_differentiable: Iterable[int] = (),
            check: Callable | None = None,
        ) -> None:
            if not (isinstance(op_type, str) and _OP_TYPE.match(op_type)):
                raise PluginError(f"{GRADIENT_HOOK} registered an invalid op_type {op_type!r}")
            if not isinstance(domain, str):
                raise PluginError(f"{GRADIENT_HOOK}: domain of {op_type} must be a string")
            if not callable(rule) or (check is not None and not callable(check)):
                raise PluginError(
                    f"{GRADIENT_HOOK}: the rule (and check) for {op_type} must be callable, "
                    f"got {rule!r}"
                )
            positions = frozenset(non_differentiable)
            if not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in positions
            ):
                raise PluginError(
                    f"{GRADIENT_HOOK}: non_differentiable of {op_type} must hold input "
                    f"positions (ints >= 0), got {non_differentiable!r}"
                )
            domain = "" if domain in _DEFAULT_DOMAINS else domain
            pending.append(GradientRegistration(op_type, domain, rule, info, positions, check))

        try:
            caller(register=register)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a raising (or exiting) hook loses its registrations
            self._fail(info, f"hook {GRADIENT_HOOK}", _describe_exception(exc))
            return
        for reg in pending:
            owner = self._gradients.get((reg.domain, reg.op_type))
            if owner is not None:
                self._fail(
                    info,
                    f"registering the gradient of '{reg.operator}'",
                    f"a rule is already registered by {owner.plugin.describe()}; "
                    f"keeping {owner.plugin.name}'s, refusing this one",
                )
                continue
            self._gradients[(reg.domain, reg.op_type)] = reg

    def _fail(self, info: PluginInfo, stage: str, message: str) -> None:
        failure = PluginFailure(info, stage, message)
        self._failures.append(failure)
        # Attributed to the plugin's module rather than to a line of this file, which would
        # tell a user nothing (and print a line of registry code under the message).
        warnings.warn_explicit(
            failure.describe(), PluginWarning, filename=info.module, lineno=0, module=info.module
        )
        if self._trace:
            sys.stderr.write(f"onnxloss: {failure.describe()}\n")

    # -- queries ---------------------------------------------------------------------------
    def registrations(self, kind: str) -> dict[str, Registration]:
        """Canonical name → registration, sorted by name."""
        self.load()
        return dict(sorted(self._tables[kind].items()))

    def lookup(self, kind: str, name: str) -> Registration:
        """The registration for a name or alias, else an error listing what exists."""
        self.load()
        reg = self._lookup[kind].get(name) if isinstance(name, str) else None
        if reg is not None:
            return reg
        known = ", ".join(sorted(self._lookup[kind]))
        hint = ""
        if self._failures:
            # The name may belong to a plugin that did not load: say which ones did not.
            hint = "; plugins that failed: " + "; ".join(f.describe() for f in self._failures)
        raise UnknownTermError(f"unknown {kind} {name!r}; available: {known}{hint}")

    def gradient_rules(self) -> dict[tuple[str, str], GradientRegistration]:
        """``(domain, op_type)`` → the registered gradient rule, sorted (domain ``""`` is
        ai.onnx)."""
        self.load()
        return dict(sorted(self._gradients.items()))

    def gradient_rule(self, op_type: str, domain: str = "") -> GradientRegistration | None:
        """The rule for one operator, or None when no plugin registers one."""
        self.load()
        return self._gradients.get(("" if domain in _DEFAULT_DOMAINS else domain, op_type))

    @property
    def plugins(self) -> list[PluginInfo]:
        self.load()
        return list(self._plugins)

    @property
    def failures(self) -> list[PluginFailure]:
        self.load()
        return list(self._failures)

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for introspection; register through add_plugin)."""
        return self._pm


def _describe_exception(exc: BaseException) -> str:
    """``RuntimeError: boom``; for ``sys.exit(...)``, what the plugin tried to do."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r}); onnxloss ignored it"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _plugin_output_to_stderr():
    """Send what plugins print while they load to stderr, keeping stdout for the output of
    the program (``onnxloss plugins --json``). Python-level only: ``sys.stdout`` is
    swapped for the duration, so the prints of other threads go to stderr meanwhile."""
    with contextlib.redirect_stdout(sys.stderr if sys.stderr is not None else io.StringIO()):
        yield


_default: PluginRegistry | None = None
_default_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide registry, created from the environment on first use."""
    global _default
    registry = _default
    if registry is None:
        with _default_lock:  # two threads starting at once share one registry
            if _default is None:
                _default = PluginRegistry.from_environment()
            registry = _default
    return registry


def reset_registry(registry: PluginRegistry | None = None) -> PluginRegistry | None:
    """Replace the process-wide registry (``None``: re-read the environment on next use).

    Returns the previous one, so tests can put it back.
    """
    global _default
    with _default_lock:
        previous, _default = _default, registry
    return previous


def available_losses() -> dict[str, Registration]:
    """Registered losses: canonical name → :class:`Registration` (class, plugin, aliases)."""
    return get_registry().registrations("loss")


def available_regularizers() -> dict[str, Registration]:
    """Registered regularizers: canonical name → :class:`Registration`."""
    return get_registry().registrations("regularizer")
