using Messaging.Torture;

// Two roles in one program: the driver (default), and the consumer process it starts and kills ("consume").
return args.Length > 0 && args[0] == "consume"
    ? await ConsumerProcess.RunAsync(args[1..])
    : await TortureRun.RunAsync(args);
