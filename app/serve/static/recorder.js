// AudioWorklet of `kws serve`'s page: hands every block of the microphone's first channel to
// the page, which makes a 16-bit PCM WAV of them (app.js, wavBlob).
class TakeRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("take-recorder", TakeRecorder);
