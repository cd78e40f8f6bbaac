// AudioWorklet: microphone blocks (128 float samples) -> 16-bit PCM frames of ~40 ms, posted to the page.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const ms = (options && options.processorOptions && options.processorOptions.frameMs) || 40;
    this.size = Math.round(sampleRate * ms / 1000);
    this.frame = new Int16Array(this.size);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const channels = input.length;
      const n = input[0].length;
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let c = 0; c < channels; c++) s += input[c][i];
        s /= channels;  // downmix
        s = Math.max(-1, Math.min(1, s));
        this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.fill === this.size) {
          this.port.postMessage(this.frame.buffer, [this.frame.buffer]);  // transferred: detached here
          this.frame = new Int16Array(this.size);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
