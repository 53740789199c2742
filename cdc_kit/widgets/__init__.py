"""The widget lab (lesson 09): change rows by hand and watch them arrive in ClickHouse.

- `ChangeLab` (lab.py): the handlers as plain methods (`insert`, `update`, `delete`, `bulk`)
  and the probes that read the row on every side and time commit -> visible in `FINAL`;
- `LabPanel` (panel.py): the ipywidgets panel that wires buttons to those methods and
  refreshes its views from a task in the notebook kernel's event loop;
- `TopicTail` (tail.py): the newest events on the change topic, read incrementally.

    lab = ChangeLab(stack)
    LabPanel(lab, router).show()
"""

from cdc_kit.widgets.lab import Change, ChangeLab
from cdc_kit.widgets.panel import LabPanel
from cdc_kit.widgets.tail import TopicTail

__all__ = ["Change", "ChangeLab", "LabPanel", "TopicTail"]
