# The wearable's sensors, read with the pins of the original board:
#   DS18X20 patient temperature  1-Wire on GPIO16
#   pulse sensor                 ADC0 (GPIO26), 0-3.3 V
#   RP2040 internal temperature  ADC4
#   MPU6050 accelerometer + die temperature, I2C1 SDA GPIO14, SCL GPIO15
import struct

import ds18x20
import machine
import onewire

from clock import sleep_ms

MPU_ADDR = 0x68
MPU_PWR_MGMT_1 = 0x6B
MPU_ACCEL_XOUT_H = 0x3B  # then Y, Z, TEMP: 8 bytes, big-endian signed
ACCEL_LSB_PER_G = 16384.0  # +-2 g full scale (reset default)
VREF = 3.3
ADC_FULL = 65535.0
DS_CONVERSION_MS = 750


class SensorError(Exception):
    pass


class Sensors:
    def __init__(self, feed=None):
        self.feed = feed or (lambda: None)
        self.pulse = machine.ADC(0)
        self.mcu = machine.ADC(4)
        self.i2c = machine.I2C(1, sda=machine.Pin(14), scl=machine.Pin(15), freq=400000)
        self.ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(16)))
        self.rom = None
        self.mpu_awake = False
        self.converting = False

    def _patient_temp(self):
        if self.rom is None:
            roms = self.ds.scan()
            if not roms:
                raise SensorError("no DS18X20 on GPIO16")
            self.rom = roms[0]
            self.converting = False
        if not self.converting:
            # first reading: wait for a conversion (feeding the watchdog)
            self.ds.convert_temp()
            for _ in range(DS_CONVERSION_MS // 50):
                self.feed()
                sleep_ms(50)
        try:
            value = self.ds.read_temp(self.rom)
            # start the next conversion now: it completes during the send interval
            self.ds.convert_temp()
            self.converting = True
        except Exception as e:  # CRC error, sensor unplugged (onewire raises several types)
            self.rom = None
            raise SensorError("DS18X20 read failed: %s" % e)
        if value is None:
            raise SensorError("DS18X20 returned nothing")
        return value

    def _mpu(self):
        try:
            if not self.mpu_awake:
                self.i2c.writeto_mem(MPU_ADDR, MPU_PWR_MGMT_1, b"\x00")
                self.mpu_awake = True
            ax, ay, az, t = struct.unpack(">hhhh", self.i2c.readfrom_mem(MPU_ADDR, MPU_ACCEL_XOUT_H, 8))
        except OSError as e:
            self.mpu_awake = False
            raise SensorError("MPU6050 read failed: %s" % e)
        return ax / ACCEL_LSB_PER_G, ay / ACCEL_LSB_PER_G, az / ACCEL_LSB_PER_G, t / 340.0 + 36.53

    def read(self):
        """One reading as numbers, keyed by the v1 field names."""
        temp = self._patient_temp()
        pulse = self.pulse.read_u16() * VREF / ADC_FULL
        volts = self.mcu.read_u16() * VREF / ADC_FULL
        mcu = 27 - (volts - 0.706) / 0.001721  # RP2040 datasheet formula
        ax, ay, az, mpu = self._mpu()
        return {"Temp": temp, "TempMcu": mcu, "PulseSig": pulse,
                "Acel_x": ax, "Acel_y": ay, "Acel_z": az, "TempMpu": mpu}
