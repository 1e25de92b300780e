"""STAND-IN for the few MRML node classes the DinoMix module uses, for tests only (this is NOT MRML).

Volumes hold a numpy array in Slicer's ``arrayFromVolume`` order ``(k, j, i)`` and a 4x4 IJK-to-RAS matrix; they
are read with nibabel, whose affine is what Slicer shows as IJK-to-RAS for a NIfTI file. A segmentation keeps one
binary mask per segment on the grid of the volume it was given as reference geometry, and only that grid is
supported: asking for a mask on another grid raises ``NotImplementedError`` (real Slicer resamples). The point is
to run the module's own code paths (array order, transposes, affines, segment names/colours) against a real
server, not to imitate Slicer's resampling.
"""

from collections import OrderedDict

import numpy as np

STANDIN = True


class _Node:
    def __init__(self, name=""):
        self._name = name

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name


class vtkMRMLScalarVolumeNode(_Node):
    def __init__(self, name="", array=None, ijk_to_ras=None):
        super().__init__(name)
        self.array = array  # (k, j, i)
        self.ijk_to_ras = np.eye(4) if ijk_to_ras is None else np.asarray(ijk_to_ras, dtype=np.float64)

    def GetIJKToRASMatrix(self, matrix):
        for r in range(4):
            for c in range(4):
                matrix.SetElement(r, c, float(self.ijk_to_ras[r, c]))

    def same_grid(self, other):
        return self.array.shape == other.array.shape and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=1e-3)


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    pass


class vtkSegment:
    def __init__(self, name, color):
        self._name, self._color = name, tuple(color)

    def GetName(self):
        return self._name

    def GetColor(self):
        return self._color


class vtkSegmentation:
    def __init__(self):
        self.segments = OrderedDict()

    def AddEmptySegment(self, segmentId="", segmentName="", color=(0.5, 0.5, 0.5)):
        segmentId = segmentId or f"Segment_{len(self.segments) + 1}"
        if segmentId in self.segments:
            raise ValueError(f"stand-in vtkSegmentation: duplicate segment id {segmentId!r}")
        self.segments[segmentId] = vtkSegment(segmentName or segmentId, color)
        return segmentId

    def RemoveAllSegments(self):
        self.segments.clear()

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegmentID(self, n):
        return list(self.segments)[n]

    def GetSegment(self, segmentId):
        return self.segments.get(segmentId)

    def GetSegmentIdBySegmentName(self, name):
        return next((sid for sid, seg in self.segments.items() if seg.GetName() == name), "")


class vtkMRMLSegmentationNode(_Node):
    def __init__(self, name=""):
        super().__init__(name)
        self._segmentation = vtkSegmentation()
        self.reference = None
        self.masks = {}  # segment id -> bool (k, j, i) on the reference grid
        self.display_nodes = False

    def CreateDefaultDisplayNodes(self):
        self.display_nodes = True

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.reference = volume

    def GetSegmentation(self):
        return self._segmentation

    def _check_grid(self, volume):
        if self.reference is None or volume is None or not self.reference.same_grid(volume):
            raise NotImplementedError("stand-in segmentation: only the reference volume's grid is supported")


class vtkMRMLMarkupsNode(_Node):
    """Event ids of Slicer's markups nodes (the value is the stand-in's own)."""

    PointPositionDefinedEvent = 19001


class _DisplayNode:
    def __init__(self):
        self.selected_color = None

    def SetSelectedColor(self, r, g, b):
        self.selected_color = (float(r), float(g), float(b))


class vtkMRMLMarkupsFiducialNode(vtkMRMLMarkupsNode):
    """A point list: control points in RAS and VTK-style observers (``AddObserver(event, callback)``)."""

    def __init__(self, name=""):
        super().__init__(name)
        self.points = []
        self._observers = {}
        self._display = None

    def CreateDefaultDisplayNodes(self):
        self._display = _DisplayNode()

    def GetDisplayNode(self):
        return self._display

    def AddObserver(self, event, callback):
        tag = len(self._observers) + 1
        self._observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag):
        self._observers.pop(tag, None)

    def InvokeEvent(self, event):
        for observed, callback in list(self._observers.values()):
            if observed == event:
                callback(self, event)

    def AddControlPoint(self, position, label=""):
        self.points.append(tuple(float(v) for v in position))
        return len(self.points) - 1

    def GetNumberOfControlPoints(self):
        return len(self.points)

    def GetNthControlPointPosition(self, n):
        return self.points[n]

    def RemoveNthControlPoint(self, n):
        del self.points[n]

    def RemoveAllControlPoints(self):
        self.points = []

    def place(self, ras):
        """Stand-in only: what a click in a view does in place mode (the point is added, then defined)."""
        self.AddControlPoint(ras)
        self.InvokeEvent(self.PointPositionDefinedEvent)


NODE_CLASSES = {
    "vtkMRMLMarkupsFiducialNode": vtkMRMLMarkupsFiducialNode,
    "vtkMRMLScalarVolumeNode": vtkMRMLScalarVolumeNode,
    "vtkMRMLLabelMapVolumeNode": vtkMRMLLabelMapVolumeNode,
    "vtkMRMLSegmentationNode": vtkMRMLSegmentationNode,
}


def read_volume_node(path, klass, name):
    """A volume node from a NIfTI file (nibabel), array in (k, j, i) order like ``slicer.util.arrayFromVolume``."""
    import nibabel as nib

    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    if klass is vtkMRMLLabelMapVolumeNode:
        data = data.astype(np.int32)
    return klass(name, np.ascontiguousarray(data.transpose(2, 1, 0)), img.affine)
