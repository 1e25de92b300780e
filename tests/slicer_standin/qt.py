"""STAND-IN for 3D Slicer's PythonQt ``qt`` module, used only by the DinoMix module's tests.

This is NOT Qt. It models just enough of PythonQt's behaviour for ``slicer_module/DinoMix/DinoMix.py`` to be
instantiated and driven in tests without 3D Slicer: widgets hold their Qt properties as plain attributes
(PythonQt exposes ``lineEdit.text``, ``checkBox.checked``, ``spinBox.value`` ... as attributes), signals can
be connected with ``obj.connect("clicked(bool)", slot)`` or ``obj.clicked.connect(slot)`` and fired with
``emit``/``click()``; nothing is drawn. Disabled buttons ignore ``click()`` as in Qt.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

STANDIN = True


def _signal_name(signature: str) -> str:
    return signature.split("(", 1)[0].strip()


def _signature_nargs(signature: str) -> Optional[int]:
    if "(" not in signature:
        return None
    inner = signature.split("(", 1)[1].rsplit(")", 1)[0].strip()
    return 0 if not inner else len(inner.split(","))


def _slot_nargs(slot: Callable) -> int:
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return 99
    n = 0
    for p in params:
        if p.kind in (p.VAR_POSITIONAL,):
            return 99
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


class _BoundSignal:
    """``obj.clicked``: PythonQt-style bound signal with ``connect``/``disconnect``/``emit``."""

    def __init__(self, owner: "QObject", name: str):
        self._owner, self._name = owner, name

    def connect(self, slot: Callable) -> None:
        self._owner.connect(self._name, slot)

    def disconnect(self, slot: Optional[Callable] = None) -> None:
        self._owner.disconnect(self._name, slot)

    def emit(self, *args: Any) -> None:
        self._owner.emit(self._name, *args)


class QObject:
    """Stand-in QObject: named signals, slot bookkeeping, ``objectName``."""

    SIGNALS: Tuple[str, ...] = ("destroyed",)

    def __init__(self, parent: Any = None):
        self.__dict__["_connections"] = {}
        self.objectName = ""
        self._parent = parent

    @classmethod
    def _all_signals(cls) -> set:
        out = set()
        for klass in cls.__mro__:
            out.update(getattr(klass, "SIGNALS", ()))
        return out

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and name in type(self)._all_signals():
            return _BoundSignal(self, name)
        raise AttributeError(f"stand-in {type(self).__name__} has no attribute {name!r}")

    def connect(self, signal: str, slot: Callable) -> bool:
        name = _signal_name(signal)
        if name not in type(self)._all_signals():
            raise AttributeError(f"stand-in {type(self).__name__} has no signal {signal!r}")
        if not callable(slot):
            raise TypeError(f"slot for {signal!r} is not callable")
        self._connections.setdefault(name, []).append((_signature_nargs(signal), slot))
        return True

    def disconnect(self, signal: str, slot: Optional[Callable] = None) -> None:
        name = _signal_name(signal)
        self._connections[name] = [c for c in self._connections.get(name, []) if slot is not None and c[1] != slot]

    def connections(self, signal: str) -> List[Callable]:
        """Stand-in only: the slots connected to ``signal``."""
        return [slot for _, slot in self._connections.get(_signal_name(signal), [])]

    def emit(self, signal: str, *args: Any) -> None:
        for nargs, slot in list(self._connections.get(_signal_name(signal), [])):
            # PythonQt passes at most as many arguments as the slot accepts
            n = _slot_nargs(slot) if nargs is None else min(nargs, _slot_nargs(slot))
            slot(*args[: min(n, len(args))])

    def setObjectName(self, name: str) -> None:
        self.objectName = name

    def parent(self) -> Any:
        return self._parent


class QColor:
    def __init__(self, r: int = 0, g: int = 0, b: int = 0, a: int = 255):
        self.rgba = (int(r), int(g), int(b), int(a))

    def red(self) -> int:
        return self.rgba[0]

    def green(self) -> int:
        return self.rgba[1]

    def blue(self) -> int:
        return self.rgba[2]


class Qt:
    WaitCursor = 3
    ArrowCursor = 0
    DisplayRole = 0
    DecorationRole = 1
    ToolTipRole = 3
    UserRole = 256
    AlignLeft = 0x1
    AlignCenter = 0x84
    TextSelectableByMouse = 1


class QCursor:
    def __init__(self, shape: int = 0):
        self.shape = shape


class QApplication:
    """Stand-in: records override-cursor pushes/pops so tests can check they are balanced."""

    override_cursor_depth = 0

    @staticmethod
    def setOverrideCursor(cursor: Any) -> None:
        QApplication.override_cursor_depth += 1

    @staticmethod
    def restoreOverrideCursor() -> None:
        QApplication.override_cursor_depth -= 1

    @staticmethod
    def processEvents() -> None:
        pass


class QSettings:
    """Stand-in: an in-memory key/value store shared by all instances."""

    _store: Dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self._store[key] = value

    def contains(self, key: str) -> bool:
        return key in self._store


class QLayout(QObject):
    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.items: List[Any] = []
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def addWidget(self, widget: Any, *args: Any) -> None:
        self.items.append(widget)

    def addLayout(self, layout: Any, *args: Any) -> None:
        self.items.append(layout)

    def addRow(self, *args: Any) -> None:
        self.items.extend(a for a in args if not isinstance(a, str))

    def addStretch(self, *args: Any) -> None:
        pass

    def count(self) -> int:
        return len(self.items)


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QWidget(QObject):
    """Stand-in QWidget: ``enabled``, ``visible``, ``toolTip`` properties and a layout."""

    SIGNALS = ("customContextMenuRequested",)

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self._layout: Optional[QLayout] = None
        self.children_: List[QObject] = []
        self.mrmlScene = None

    def setLayout(self, layout: QLayout) -> None:
        self._layout = layout

    def layout(self) -> Optional[QLayout]:
        return self._layout

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def isEnabled(self) -> bool:
        return self.enabled

    def setVisible(self, visible: bool) -> None:
        self.visible = bool(visible)

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def setToolTip(self, tip: str) -> None:
        self.toolTip = tip

    def setMRMLScene(self, scene: Any) -> None:
        self.mrmlScene = scene

    def findChildren(self, klass: Any = None) -> List[QObject]:
        out: List[QObject] = []
        for c in self.children_:
            if klass is None or isinstance(c, klass):
                out.append(c)
            if isinstance(c, QWidget):
                out.extend(c.findChildren(klass))
        return out


class QFrame(QWidget):
    pass


class QGroupBox(QWidget):
    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.title = ""


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "pressed", "released")

    def __init__(self, text: str = "", parent: Any = None):
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self.checked = False

    def setText(self, text: str) -> None:
        self.text = text

    def setCheckable(self, checkable: bool) -> None:
        self.checkable = bool(checkable)

    def setChecked(self, checked: bool) -> None:
        if bool(checked) != self.checked:
            self.checked = bool(checked)
            self.emit("toggled", self.checked)

    def isChecked(self) -> bool:
        return self.checked

    def click(self) -> None:
        """Like Qt: a disabled button ignores clicks; a checkable one toggles first."""
        if not self.enabled:
            return
        if self.checkable:
            self.setChecked(not self.checked)
        self.emit("clicked", self.checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    def __init__(self, text: str = "", parent: Any = None):
        super().__init__(text, parent)
        self.checkable = True


class QRadioButton(QCheckBox):
    pass


class QLabel(QWidget):
    SIGNALS = ("linkActivated",)

    def __init__(self, text: str = "", parent: Any = None):
        super().__init__(parent)
        self.text = text
        self.wordWrap = False

    def setText(self, text: str) -> None:
        self.text = str(text)


class QLineEdit(QWidget):
    SIGNALS = ("textChanged", "editingFinished", "returnPressed")

    def __init__(self, text: str = "", parent: Any = None):
        super().__init__(parent)
        self.text = text
        self.placeholderText = ""
        self.readOnly = False

    def setText(self, text: str) -> None:
        self.text = str(text)
        self.emit("textChanged", self.text)


class QPlainTextEdit(QWidget):
    SIGNALS = ("textChanged",)

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.plainText = ""
        self.readOnly = False

    def setPlainText(self, text: str) -> None:
        self.plainText = str(text)
        self.emit("textChanged")

    def toPlainText(self) -> str:
        return self.plainText


class QTextEdit(QPlainTextEdit):
    pass


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged", "activated")

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._items: List[Tuple[str, Any]] = []
        self.currentIndex = -1
        self.editable = False
        self._edit_text = ""

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def currentText(self) -> str:
        if self.editable and self._edit_text:
            return self._edit_text
        return self._items[self.currentIndex][0] if 0 <= self.currentIndex < len(self._items) else ""

    def addItem(self, text: str, userData: Any = None) -> None:
        self._items.append((str(text), userData))
        if self.currentIndex < 0:
            self.setCurrentIndex(0)

    def addItems(self, texts: List[str]) -> None:
        for t in texts:
            self.addItem(t)

    def clear(self) -> None:
        self._items = []
        self.currentIndex = -1
        self._edit_text = ""

    def itemText(self, index: int) -> str:
        return self._items[index][0]

    def itemData(self, index: int) -> Any:
        return self._items[index][1]

    def findText(self, text: str) -> int:
        for i, (t, _) in enumerate(self._items):
            if t == text:
                return i
        return -1

    def setCurrentIndex(self, index: int) -> None:
        if index != self.currentIndex:
            self.currentIndex = index
            self._edit_text = ""
            self.emit("currentIndexChanged", index)
            self.emit("currentTextChanged", self.currentText)

    def setCurrentText(self, text: str) -> None:
        i = self.findText(text)
        if i >= 0:
            self.setCurrentIndex(i)
        elif self.editable:
            self._edit_text = str(text)
            self.emit("currentTextChanged", self.currentText)

    def setEditable(self, editable: bool) -> None:
        self.editable = bool(editable)


class QAbstractSpinBox(QWidget):
    SIGNALS = ("valueChanged", "editingFinished")

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.minimum = 0
        self.maximum = 99
        self.singleStep = 1
        self.value = 0
        self.suffix = ""

    def setValue(self, value: Any) -> None:
        v = min(max(value, self.minimum), self.maximum)
        if v != self.value:
            self.value = v
            self.emit("valueChanged", v)

    def setRange(self, lo: Any, hi: Any) -> None:
        self.minimum, self.maximum = lo, hi
        self.setValue(self.value)

    def setMinimum(self, lo: Any) -> None:
        self.setRange(lo, self.maximum)

    def setMaximum(self, hi: Any) -> None:
        self.setRange(self.minimum, hi)


class QSpinBox(QAbstractSpinBox):
    pass


class QDoubleSpinBox(QAbstractSpinBox):
    pass


class QProgressBar(QWidget):
    SIGNALS = ("valueChanged",)

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.minimum = 0
        self.maximum = 100
        self.value = -1
        self.format = "%p%"
        self.textVisible = True

    def setValue(self, value: int) -> None:
        self.value = int(min(max(value, self.minimum), self.maximum))
        self.emit("valueChanged", self.value)

    def setRange(self, lo: int, hi: int) -> None:
        self.minimum, self.maximum = int(lo), int(hi)

    def setMaximum(self, hi: int) -> None:
        self.maximum = int(hi)

    def reset(self) -> None:
        self.value = -1


class QListWidgetItem:
    """Not a QObject in Qt either: ``text()`` is a method."""

    def __init__(self, text: str = ""):
        self._text = str(text)
        self._data: Dict[int, Any] = {}

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        self._text = str(text)

    def setData(self, role: int, value: Any) -> None:
        self._data[role] = value

    def data(self, role: int) -> Any:
        return self._data.get(role)

    def setToolTip(self, tip: str) -> None:
        self._data[Qt.ToolTipRole] = tip


class QListWidget(QWidget):
    SIGNALS = ("itemClicked", "currentRowChanged", "itemSelectionChanged")

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._items: List[QListWidgetItem] = []

    @property
    def count(self) -> int:
        return len(self._items)

    def addItem(self, item: Any) -> None:
        self._items.append(item if isinstance(item, QListWidgetItem) else QListWidgetItem(str(item)))

    def item(self, row: int) -> Optional[QListWidgetItem]:
        return self._items[row] if 0 <= row < len(self._items) else None

    def clear(self) -> None:
        self._items = []


class QTimer(QObject):
    """Stand-in timer: never fires by itself; tests call ``timer.timeout.emit()`` (or ``fire()``)."""

    SIGNALS = ("timeout",)

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.interval = 0
        self.singleShot = False
        self.active = False

    def setInterval(self, ms: int) -> None:
        self.interval = int(ms)

    def setSingleShot(self, single: bool) -> None:
        self.singleShot = bool(single)

    def start(self, ms: Optional[int] = None) -> None:
        if ms is not None:
            self.interval = int(ms)
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> None:
        """Stand-in only: emit ``timeout`` once (as the event loop would after ``interval`` ms)."""
        if self.singleShot:
            self.active = False
        self.emit("timeout")
