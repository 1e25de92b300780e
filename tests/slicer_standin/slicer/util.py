"""STAND-IN for ``slicer.util`` (3D Slicer's Python utilities), used only by the DinoMix module's tests.

* ``loadUI(path)`` parses the real Qt Designer ``.ui`` file (``xml.etree``) and builds stand-in widgets of the
  named classes with their ``objectName`` and simple properties (string/bool/number/double, combo-box and
  list items), so a test fails when the module refers to a widget the ``.ui`` does not define, or the ``.ui``
  names a class the stand-in does not know.
* ``errorDisplay``/``warningDisplay``/``infoDisplay``/``confirmYesNoDisplay``/``delayDisplay`` show nothing:
  they append ``{"kind", "text", ...}`` to :data:`messages`; ``confirmYesNoDisplay`` answers
  :data:`confirm_answer`.
* ``loadVolume``/``loadLabelVolume``/``arrayFromVolume`` and the segment array functions work on the stand-in
  nodes of :mod:`slicer.mrml` (nibabel reading, masks on the reference volume's grid only).
"""

import types
import xml.etree.ElementTree as ET

import ctk
import numpy as np
import qt

STANDIN = True

#: every message the module would have shown, in order
messages = []
#: what ``confirmYesNoDisplay`` answers
confirm_answer = False

_SIMPLE = {"string": str, "bool": lambda s: s.strip().lower() == "true", "number": int, "double": float}


def _widget_class(name):
    import slicer

    for ns in (qt, ctk, slicer):
        klass = getattr(ns, name, None)
        if isinstance(klass, type):
            return klass
    raise NotImplementedError(f"stand-in slicer.util.loadUI: no stand-in class for Qt Designer class {name!r}")


def _set_property(obj, prop):
    name = prop.get("name")
    value_el = next(iter(prop), None)
    if value_el is None or value_el.tag not in _SIMPLE:
        return  # geometry, sizePolicy, enums, ...: irrelevant for the stand-in
    value = _SIMPLE[value_el.tag](value_el.text or "")
    setattr(obj, name, value)


def _build(el, parent_widget, all_widgets):
    """Build the widget described by <widget> element ``el`` (and its subtree)."""
    klass = _widget_class(el.get("class"))
    w = klass()
    w.objectName = el.get("name", "")
    if parent_widget is not None:
        parent_widget.children_.append(w)
    all_widgets.append(w)
    for child in el:
        if child.tag == "property":
            _set_property(w, child)
        elif child.tag == "item":  # combo box / list widget entries
            text = child.find("./property[@name='text']/string")
            if text is not None and hasattr(w, "addItem"):
                w.addItem(text.text or "")
        elif child.tag == "widget":
            _build(child, w, all_widgets)
        elif child.tag == "layout":
            _layout(child, w, all_widgets)
    return w


def _layout(el, owner_widget, all_widgets, attach=True):
    """Build a <layout> element; its widgets become children of ``owner_widget`` (as in Qt)."""
    layout = getattr(qt, el.get("class"), qt.QVBoxLayout)()
    layout.objectName = el.get("name", "")
    if attach:
        owner_widget.setLayout(layout)
    for item in el.findall("item"):
        for sub in item:
            if sub.tag == "widget":
                layout.addWidget(_build(sub, owner_widget, all_widgets))
            elif sub.tag == "layout":
                layout.addLayout(_layout(sub, owner_widget, all_widgets, attach=False))
    return layout


def loadUI(path):
    """Stand-in for ``slicer.util.loadUI``: build stand-in widgets from a Qt Designer file."""
    root = ET.parse(path).getroot()
    if root.tag != "ui":
        raise ValueError(f"{path} is not a Qt Designer .ui file")
    top = root.find("widget")
    if top is None:
        raise ValueError(f"{path} has no top-level <widget>")
    return _build(top, None, [])


def childWidgetVariables(widget):
    """Stand-in for ``slicer.util.childWidgetVariables``: each named descendant widget as an attribute."""
    ns = types.SimpleNamespace()
    for w in [widget] + widget.findChildren():
        if w.objectName:
            setattr(ns, w.objectName, w)
    return ns


def _record(kind, text, windowTitle=None, **kwargs):
    messages.append(dict(kind=kind, text=str(text), windowTitle=windowTitle, **kwargs))


def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("error", text, windowTitle, **kwargs)


def warningDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("warning", text, windowTitle, **kwargs)


def infoDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("info", text, windowTitle, **kwargs)


def confirmYesNoDisplay(text, windowTitle=None, parent=None, **kwargs):
    _record("confirm", text, windowTitle, **kwargs)
    return confirm_answer


def delayDisplay(message, autoCloseMsec=1000, parent=None, **kwargs):
    _record("delay", message)


def settingsValue(key, default, converter=lambda v: v, settings=None):
    settings = settings if settings is not None else qt.QSettings()
    return converter(settings.value(key)) if settings.contains(key) else default


def selectModule(name):
    _record("selectModule", name)


def _scene():
    import slicer

    return slicer.mrmlScene


def loadVolume(filename, properties=None, returnNode=False):
    """Stand-in: read a NIfTI volume with nibabel into a stand-in scalar volume node added to the scene."""
    from .mrml import read_volume_node, vtkMRMLScalarVolumeNode

    name = (properties or {}).get("name", "volume")
    return _scene().AddNode(read_volume_node(filename, vtkMRMLScalarVolumeNode, name))


def loadLabelVolume(filename, properties=None, returnNode=False):
    """Stand-in: read a NIfTI label map with nibabel into a stand-in labelmap volume node added to the scene."""
    from .mrml import read_volume_node, vtkMRMLLabelMapVolumeNode

    name = (properties or {}).get("name", "label")
    return _scene().AddNode(read_volume_node(filename, vtkMRMLLabelMapVolumeNode, name))


def arrayFromVolume(volumeNode):
    return volumeNode.array


def setSliceViewerLayers(**kwargs):
    _record("setSliceViewerLayers", ", ".join(sorted(kwargs)))


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None):
    """Stand-in: store the mask; ``narray`` must be on the segmentation's reference grid."""
    segmentationNode._check_grid(referenceVolumeNode or segmentationNode.reference)
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"stand-in: no segment {segmentId!r}")
    if narray.shape != segmentationNode.reference.array.shape:
        raise ValueError(f"stand-in: array shape {narray.shape} is not the reference shape")
    segmentationNode.masks[segmentId] = np.asarray(narray) != 0


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None):
    """Stand-in: the segment's mask (uint8, 1 inside) on the reference grid."""
    segmentationNode._check_grid(referenceVolumeNode or segmentationNode.reference)
    mask = segmentationNode.masks.get(segmentId)
    shape = segmentationNode.reference.array.shape
    return (mask if mask is not None else np.zeros(shape, bool)).astype(np.uint8)
