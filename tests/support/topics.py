"""The legacy public topics as protocol/v1.md lists them: the tests' oracle, kept apart from the
publisher's own mapping (services/publisher/topics.py) so a mistake there cannot hide itself."""

LEGACY = {
    "Physiological_Data/Temperature": "Temp",
    "Physiological_Data/Pulse_Signal": "PulseSig",
    "Physiological_Data/Accelerometer/x": "Acel_x",
    "Physiological_Data/Accelerometer/y": "Acel_y",
    "Physiological_Data/Accelerometer/z": "Acel_z",
    "Internal_Device_Data/Temperature/MCU": "TempMcu",
    "Internal_Device_Data/Temperature/MPU": "TempMpu",
}
